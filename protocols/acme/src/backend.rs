//! The narrow interface the embedder implements: profiles, who an account is, the policy
//! pre-check, issuance through the one pipeline, certificates and revocation.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;
use time::OffsetDateTime;

use crate::problem::Problem;
use crate::records::{AccountRecord, OrderRecord};
use crate::wire::Identifier;

/// A profile as the directory shows it.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// The directory's `meta` object (termsOfService, website, externalAccountRequired…);
    /// `caaIdentities` and `profiles` are added from the fields below.
    pub meta: serde_json::Map<String, Value>,
    /// Roles given to accounts created without external account binding; `None` means
    /// such accounts are refused (`externalAccountRequired`).
    pub anonymous_roles: Option<Vec<String>>,
    /// CAA issuer domains of this CA (`meta.caaIdentities`); empty = CAA is not checked.
    pub caa_identities: Vec<String>,
    /// Certificate profiles a newOrder may pick (`meta.profiles`): name → description.
    pub certificate_profiles: BTreeMap<String, String>,
    /// The certificate profile of orders that name none.
    pub default_certificate_profile: String,
}

/// A certificate the embedder knows, for revocation checks.
#[derive(Debug, Clone)]
pub struct KnownCertificate {
    /// Serial, hex.
    pub serial: String,
    /// Identity that requested it.
    pub owner: String,
    /// Its names.
    pub identifiers: Vec<Identifier>,
    /// Its SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
    /// Already revoked.
    pub revoked: bool,
    /// The embedder's renewal window (start, end) for ARI, when it has one; otherwise the
    /// last third of the lifetime is suggested.
    pub renewal_window: Option<(OffsetDateTime, OffsetDateTime)>,
}

/// An external account (MAC) key the embedder handed out (RFC 8555 §7.3.4).
#[derive(Debug, Clone)]
pub struct ExternalAccountKey {
    /// The MAC key.
    pub mac_key: Vec<u8>,
    /// Identity accounts bound with it act as.
    pub identity: String,
    /// Roles of that identity.
    pub roles: Vec<String>,
    /// The account it was bound to (a key binds one account).
    pub bound_account: Option<String>,
}

/// What came of a finalize.
#[derive(Debug, Clone)]
pub enum Issuance {
    /// Issued now.
    Issued {
        /// Serial, hex.
        serial: String,
    },
    /// Not signed yet: waiting for a person's approval, or for a CA slower than the
    /// embedder waits in a finalize; poll with [`AcmeBackend::pending_status`].
    Pending {
        /// The embedder's request id.
        request_id: String,
    },
}

/// Where a pending request stands.
#[derive(Debug, Clone)]
pub enum PendingStatus {
    /// Still waiting.
    Waiting,
    /// Approved and issued.
    Issued {
        /// Serial, hex.
        serial: String,
    },
    /// Refused (the order becomes invalid with this problem).
    Refused(Problem),
}

/// Who revokes.
#[derive(Debug, Clone)]
pub enum Revoker {
    /// An account (its identity name).
    Account(String),
    /// Whoever holds the certificate's private key.
    CertificateKey,
}

/// A failed CAA check, as [`AcmeBackend::caa_refused`] hears of it.
#[derive(Debug, Clone, Copy)]
pub struct CaaRefusal<'a> {
    /// The account that asked.
    pub account: &'a AccountRecord,
    /// The name checked (without `*.`).
    pub name: &'a str,
    /// Whether the order is for the wildcard of `name`.
    pub wildcard: bool,
    /// The validation method (`http-01`, `dns-01`, `tls-alpn-01`).
    pub method: &'a str,
    /// Checked again before issuance (at finalize), not at validation.
    pub at_finalize: bool,
    /// The ACME error type the client is given (`caa`, or `dns` when the records could
    /// not be read).
    pub problem_type: &'a str,
    /// Why.
    pub reason: &'a str,
    /// The client's address for the request that led to the check, when known.
    pub client: Option<IpAddr>,
}

/// What the embedder provides.
#[async_trait::async_trait]
pub trait AcmeBackend: Send + Sync + 'static {
    /// The profile named `name`, if it exists (asked on every request: keep it cheap).
    fn profile(&self, name: &str) -> Option<&Profile>;

    /// An external account key by id.
    async fn external_account_key(
        &self,
        key_id: &str,
    ) -> Result<Option<ExternalAccountKey>, Problem>;

    /// A newAccount's external account binding was refused (`reason`): an unknown key id, a
    /// key already bound, or a MAC that does not verify; `client` is the address the
    /// request came from. For the embedder's audit.
    async fn external_account_refused(
        &self,
        profile: &str,
        key_id: &str,
        reason: &str,
        client: Option<IpAddr>,
    );

    /// A CAA check failed (RFC 8659: the name's CAA records do not permit this CA, this
    /// account or this method, or could not be read). For the embedder's audit.
    async fn caa_refused(&self, refusal: CaaRefusal<'_>);

    /// Record that `key_id` is now bound to `account_id`; fails if it already was.
    async fn bind_external_account_key(
        &self,
        key_id: &str,
        account_id: &str,
    ) -> Result<(), Problem>;

    /// Policy pre-check at newOrder and newAuthz: may `account` (its request from
    /// `client`) ask for these names at all? Returns the refused identifiers with reasons.
    async fn check_identifiers(
        &self,
        account: &AccountRecord,
        certificate_profile: &str,
        identifiers: &[Identifier],
        client: Option<IpAddr>,
    ) -> Result<(), Vec<(Identifier, String)>>;

    /// Where a request held for approval stands.
    async fn pending_status(&self, request_id: &str) -> Result<PendingStatus, Problem>;

    /// Issue for a ready order whose CSR matched it, or hold it for approval; `client` is
    /// the address the finalize request came from.
    async fn issue(
        &self,
        account: &AccountRecord,
        order: &OrderRecord,
        csr_der: Vec<u8>,
        client: Option<IpAddr>,
    ) -> Result<Issuance, Problem>;

    /// The PEM chain (leaf first) of a certificate.
    async fn certificate_chain(&self, serial: &str) -> Result<Option<String>, Problem>;

    /// Look up a certificate by serial (lower-case hex, no leading zero bytes).
    async fn certificate(&self, serial: &str) -> Result<Option<KnownCertificate>, Problem>;

    /// Revoke a certificate with an RFC 5280 reason code.
    async fn revoke(&self, serial: &str, reason: u8, revoker: Revoker) -> Result<(), Problem>;
}
