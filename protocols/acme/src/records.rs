//! What the ACME server keeps: accounts, orders and authorizations (challenges live inside
//! their authorization), and where: [`Records`] over any [`KeyValue`] store the embedder
//! provides (the daemon's store; [`MemoryKv`] in tests). Index keys live here too.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::problem::Problem;
use crate::wire::{AuthzStatus, ChallengeStatus, ChallengeType, Identifier, OrderStatus};

/// A namespaced key-value store.
#[async_trait::async_trait]
pub trait KeyValue: Send + Sync + 'static {
    /// Store `value` under `namespace`/`key`; on disk before returning when `durable`,
    /// otherwise soon after (a crash may lose it).
    async fn put(
        &self,
        namespace: &'static str,
        key: String,
        value: Vec<u8>,
        durable: bool,
    ) -> Result<(), String>;
    /// Remove `namespace`/`key` (nothing if absent); on disk before returning when
    /// `durable`.
    async fn remove(
        &self,
        namespace: &'static str,
        key: String,
        durable: bool,
    ) -> Result<(), String>;
    /// Read `namespace`/`key`.
    async fn get(&self, namespace: &'static str, key: String) -> Result<Option<Vec<u8>>, String>;
    /// Every `(key, value)` in `namespace` whose key starts with `prefix`, in key order.
    async fn scan(
        &self,
        namespace: &'static str,
        prefix: String,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        self.scan_after(namespace, prefix, None, usize::MAX).await
    }
    /// At most `limit` of what [`KeyValue::scan`] lists, from the first key after `after`
    /// on (`None`: from the start).
    async fn scan_after(
        &self,
        namespace: &'static str,
        prefix: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, String>;
}

/// An in-memory [`KeyValue`] (tests, and embedders without persistence).
#[derive(Debug, Default)]
pub struct MemoryKv(Mutex<BTreeMap<(String, String), Vec<u8>>>);

#[async_trait::async_trait]
impl KeyValue for MemoryKv {
    async fn put(
        &self,
        namespace: &'static str,
        key: String,
        value: Vec<u8>,
        _durable: bool,
    ) -> Result<(), String> {
        self.0
            .lock()
            .expect("lock")
            .insert((namespace.to_string(), key), value);
        Ok(())
    }
    async fn remove(
        &self,
        namespace: &'static str,
        key: String,
        _durable: bool,
    ) -> Result<(), String> {
        self.0
            .lock()
            .expect("lock")
            .remove(&(namespace.to_string(), key));
        Ok(())
    }
    async fn get(&self, namespace: &'static str, key: String) -> Result<Option<Vec<u8>>, String> {
        Ok(self
            .0
            .lock()
            .expect("lock")
            .get(&(namespace.to_string(), key))
            .cloned())
    }
    async fn scan_after(
        &self,
        namespace: &'static str,
        prefix: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        use std::ops::Bound;
        let map = self.0.lock().expect("lock");
        let from = match after {
            Some(after) => Bound::Excluded((namespace.to_string(), after)),
            None => Bound::Included((namespace.to_string(), prefix.clone())),
        };
        Ok(map
            .range((from, Bound::Unbounded))
            .take_while(|((ns, key), _)| ns == namespace && key.starts_with(&prefix))
            .take(limit)
            .map(|((_, key), value)| (key.clone(), value.clone()))
            .collect())
    }
}

/// Account status (RFC 8555 §7.1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    /// Usable.
    Valid,
    /// Deactivated by its holder.
    Deactivated,
    /// Revoked by the server.
    Revoked,
}

/// An account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Id (last URL segment).
    pub id: String,
    /// Profile it was created under.
    pub profile: String,
    /// Public key.
    pub jwk: Map<String, Value>,
    /// RFC 7638 thumbprint of `jwk`.
    pub thumbprint: String,
    /// `mailto:` contacts.
    pub contact: Vec<String>,
    /// Status.
    pub status: AccountStatus,
    /// rampart identity name the account acts as.
    pub identity: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A challenge inside an authorization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChallengeRecord {
    /// Type.
    pub kind: ChallengeType,
    /// Token.
    pub token: String,
    /// Status.
    pub status: ChallengeStatus,
    /// When it became valid.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub validated: Option<OffsetDateTime>,
    /// Why it failed (problem document).
    pub error: Option<Value>,
}

/// An authorization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthzRecord {
    /// Id.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// Identifier (without `*.` for wildcards).
    pub identifier: Identifier,
    /// For a wildcard order.
    pub wildcard: bool,
    /// Stored status (expiry is applied when read).
    pub status: AuthzStatus,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// Challenges.
    pub challenges: Vec<ChallengeRecord>,
}

impl AuthzRecord {
    /// Status at `now`.
    pub fn status_at(&self, now: OffsetDateTime) -> AuthzStatus {
        match self.status {
            AuthzStatus::Pending | AuthzStatus::Valid if now >= self.expires => {
                AuthzStatus::Expired
            }
            status => status,
        }
    }
}

/// An order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRecord {
    /// Id.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// Profile.
    pub profile: String,
    /// Stored status: `pending` until finalized (ready/invalid are derived from the
    /// authorizations), then `processing`, `valid` or `invalid`.
    pub status: OrderStatus,
    /// Identifiers as requested.
    pub identifiers: Vec<Identifier>,
    /// Authorization ids, one per identifier.
    pub authz_ids: Vec<String>,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// Why it became invalid.
    pub error: Option<Value>,
    /// Serial of the issued certificate.
    pub certificate_serial: Option<String>,
    /// Certificate profile (template) the order is issued on.
    #[serde(default)]
    pub certificate_profile: String,
    /// The embedder's request id while issuance waits for an approval.
    #[serde(default)]
    pub pending_request: Option<String>,
    /// RFC 9773 identifier of the certificate this order replaces, as the client sent it.
    #[serde(default)]
    pub replaces: Option<String>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Accounts and replacement claims must survive a crash; orders and authorizations may
/// be lost (clients start over), so they skip the flush.
const DURABLE: bool = true;
const EVENTUALLY: bool = false;

const ACCOUNTS: &str = "acme.accounts";
const ACCOUNT_KEYS: &str = "acme.account_keys";
const ORDERS: &str = "acme.orders";
const ACCOUNT_ORDERS: &str = "acme.account_orders";
/// `account/order` → the order's expiry (unix seconds, i64 BE), for orders not yet valid or
/// invalid when last written: what the pending-orders limit counts, without reading every
/// order the account ever made.
const ACCOUNT_OPEN_ORDERS: &str = "acme.account_open_orders";
/// Accounts whose entries in [`ACCOUNT_OPEN_ORDERS`] cover their orders from before it.
const OPEN_ORDERS_INDEXED: &str = "acme.open_orders_indexed";
const AUTHZS: &str = "acme.authzs";
const ACCOUNT_AUTHZS: &str = "acme.account_authzs";
const REPLACEMENTS: &str = "acme.replacements";
/// `o/<expiry>/<order id>` and `a/<expiry>/<authorization id>` (expiry: unix seconds,
/// 16 hex digits, so keys sort by it): what [`Records::prune_expired`] walks. A record
/// may be filed under an earlier expiry than its own (an authorization validated since);
/// the walk files it again.
const EXPIRY: &str = "acme.expiry";
/// Present once [`EXPIRY`] covers the records from before it.
const EXPIRY_INDEXED: &str = "acme.expiry_indexed";
/// Keys [`Records::prune_expired`] reads at a time.
const EXPIRY_BATCH: usize = 256;

/// The kinds of record filed in [`EXPIRY`].
#[derive(Debug, Clone, Copy)]
enum Filed {
    Order,
    Authz,
}

impl Filed {
    fn prefix(self) -> &'static str {
        match self {
            Filed::Order => "o/",
            Filed::Authz => "a/",
        }
    }

    fn key(self, due: OffsetDateTime, id: &str) -> String {
        format!("{}{:016x}/{id}", self.prefix(), due.unix_timestamp().max(0))
    }
}

fn storage(error: String) -> Problem {
    Problem::internal(format!("ACME storage: {error}"))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(bytes)
        .map_err(|e| Problem::internal(format!("corrupt ACME record: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

fn key_index(profile: &str, thumbprint: &str) -> String {
    format!("{profile}/{thumbprint}")
}

fn identifier_key(identifier: &Identifier) -> String {
    format!("{}:{}", identifier.kind, identifier.value)
}

/// Key of an order in [`ACCOUNT_ORDERS`] and [`ACCOUNT_OPEN_ORDERS`].
fn account_order_key(account_id: &str, order_id: &str) -> String {
    format!("{account_id}/{order_id}")
}

/// Key of an authorization in [`ACCOUNT_AUTHZS`].
fn account_authz_key(authz: &AuthzRecord) -> String {
    format!(
        "{}/{}/{}",
        authz.account_id,
        identifier_key(&authz.identifier),
        authz.id
    )
}

/// What [`Records::prune_expired`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Orders removed.
    pub orders: usize,
    /// Authorizations removed.
    pub authzs: usize,
}

/// Typed access to the ACME records.
pub struct Records {
    kv: Box<dyn KeyValue>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Records")
    }
}

impl Records {
    /// Over `kv`.
    pub fn new(kv: Box<dyn KeyValue>) -> Self {
        Records { kv }
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        ns: &'static str,
        key: &str,
    ) -> Result<Option<T>, Problem> {
        match self.kv.get(ns, key.to_string()).await.map_err(storage)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Store an account (and its key index).
    pub async fn put_account(&self, account: &AccountRecord) -> Result<(), Problem> {
        self.kv
            .put(ACCOUNTS, account.id.clone(), encode(account), DURABLE)
            .await
            .map_err(storage)?;
        self.kv
            .put(
                ACCOUNT_KEYS,
                key_index(&account.profile, &account.thumbprint),
                account.id.clone().into_bytes(),
                DURABLE,
            )
            .await
            .map_err(storage)
    }

    /// An account by id.
    pub async fn account(&self, id: &str) -> Result<Option<AccountRecord>, Problem> {
        self.get(ACCOUNTS, id).await
    }

    /// The account of `profile` holding the key with `thumbprint` (each profile is its own
    /// directory: one key may hold one account in each).
    pub async fn account_by_thumbprint(
        &self,
        profile: &str,
        thumbprint: &str,
    ) -> Result<Option<AccountRecord>, Problem> {
        let Some(id) = self
            .kv
            .get(ACCOUNT_KEYS, key_index(profile, thumbprint))
            .await
            .map_err(storage)?
        else {
            return Ok(None);
        };
        let account = self.account(&String::from_utf8_lossy(&id)).await?;
        // After a key change the old thumbprint may still point here: check it.
        Ok(account.filter(|a| a.thumbprint == thumbprint))
    }

    /// Store an order (and its account indexes).
    pub async fn put_order(&self, order: &OrderRecord, new: bool) -> Result<(), Problem> {
        // Filed before it is written: a crash in between leaves an index entry the
        // pruning drops, never an order it cannot find.
        if new {
            self.file(Filed::Order, order.expires, &order.id).await?;
        }
        self.kv
            .put(ORDERS, order.id.clone(), encode(order), EVENTUALLY)
            .await
            .map_err(storage)?;
        let key = account_order_key(&order.account_id, &order.id);
        let done = matches!(order.status, OrderStatus::Valid | OrderStatus::Invalid);
        if new {
            self.kv
                .put(ACCOUNT_ORDERS, key.clone(), Vec::new(), EVENTUALLY)
                .await
                .map_err(storage)?;
            if !done {
                let expires = order.expires.unix_timestamp().to_be_bytes().to_vec();
                self.kv
                    .put(ACCOUNT_OPEN_ORDERS, key, expires, EVENTUALLY)
                    .await
                    .map_err(storage)?;
            }
        } else if done {
            self.close_order(&order.account_id, &order.id).await?;
        }
        Ok(())
    }

    /// The account's orders that were neither valid nor invalid when last written (some
    /// may have expired or failed since), with their expiry. The first call for an account
    /// made before this index existed reads all its orders once to fill it in.
    pub async fn open_orders(
        &self,
        account_id: &str,
    ) -> Result<Vec<(String, OffsetDateTime)>, Problem> {
        let indexed = self
            .kv
            .get(OPEN_ORDERS_INDEXED, account_id.to_string())
            .await
            .map_err(storage)?
            .is_some();
        if !indexed {
            for id in self.order_ids(account_id).await? {
                if let Some(order) = self.order(&id).await? {
                    if !matches!(order.status, OrderStatus::Valid | OrderStatus::Invalid) {
                        let expires = order.expires.unix_timestamp().to_be_bytes().to_vec();
                        self.kv
                            .put(
                                ACCOUNT_OPEN_ORDERS,
                                account_order_key(account_id, &id),
                                expires,
                                EVENTUALLY,
                            )
                            .await
                            .map_err(storage)?;
                    }
                }
            }
            self.kv
                .put(
                    OPEN_ORDERS_INDEXED,
                    account_id.to_string(),
                    Vec::new(),
                    EVENTUALLY,
                )
                .await
                .map_err(storage)?;
        }
        let prefix = format!("{account_id}/");
        let entries = self
            .kv
            .scan(ACCOUNT_OPEN_ORDERS, prefix.clone())
            .await
            .map_err(storage)?;
        entries
            .into_iter()
            .map(|(key, value)| {
                let seconds = <[u8; 8]>::try_from(value.as_slice())
                    .map(i64::from_be_bytes)
                    .map_err(|_| Problem::internal("corrupt ACME open-order entry"))?;
                let expires = OffsetDateTime::from_unix_timestamp(seconds)
                    .map_err(|_| Problem::internal("corrupt ACME open-order entry"))?;
                Ok((key[prefix.len()..].to_string(), expires))
            })
            .collect()
    }

    /// Drop an order from the account's open orders (it is done, or expired).
    pub async fn close_order(&self, account_id: &str, order_id: &str) -> Result<(), Problem> {
        self.remove(
            ACCOUNT_OPEN_ORDERS,
            &account_order_key(account_id, order_id),
        )
        .await
    }

    /// An order.
    pub async fn order(&self, id: &str) -> Result<Option<OrderRecord>, Problem> {
        self.get(ORDERS, id).await
    }

    /// Ids of an account's orders.
    pub async fn order_ids(&self, account_id: &str) -> Result<Vec<String>, Problem> {
        self.order_ids_after(account_id, None, usize::MAX).await
    }

    /// At most `limit` ids of an account's orders in key order, from the one after `after`
    /// on (`None`: from the first).
    pub async fn order_ids_after(
        &self,
        account_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, Problem> {
        let prefix = format!("{account_id}/");
        let after = after.map(|id| format!("{prefix}{id}"));
        let entries = self
            .kv
            .scan_after(ACCOUNT_ORDERS, prefix.clone(), after, limit)
            .await
            .map_err(storage)?;
        Ok(entries
            .into_iter()
            .map(|(key, _)| key[prefix.len()..].to_string())
            .collect())
    }

    /// Store an authorization (and its account/identifier index).
    pub async fn put_authz(&self, authz: &AuthzRecord, new: bool) -> Result<(), Problem> {
        if new {
            self.file(Filed::Authz, authz.expires, &authz.id).await?;
        }
        self.kv
            .put(AUTHZS, authz.id.clone(), encode(authz), EVENTUALLY)
            .await
            .map_err(storage)?;
        if new {
            self.kv
                .put(
                    ACCOUNT_AUTHZS,
                    account_authz_key(authz),
                    Vec::new(),
                    EVENTUALLY,
                )
                .await
                .map_err(storage)?;
        }
        Ok(())
    }

    /// An authorization.
    pub async fn authz(&self, id: &str) -> Result<Option<AuthzRecord>, Problem> {
        self.get(AUTHZS, id).await
    }

    /// Record that `order_id` replaces certificate `serial`; `false` (and nothing written)
    /// if another order already does.
    pub async fn claim_replacement(&self, serial: &str, order_id: &str) -> Result<bool, Problem> {
        if self
            .kv
            .get(REPLACEMENTS, serial.to_string())
            .await
            .map_err(storage)?
            .is_some()
        {
            return Ok(false);
        }
        self.kv
            .put(
                REPLACEMENTS,
                serial.to_string(),
                order_id.as_bytes().to_vec(),
                DURABLE,
            )
            .await
            .map_err(storage)?;
        Ok(true)
    }

    /// Remove the orders that expired before `orders_before` (but those still
    /// `processing`: an issuance may still answer them) and the authorizations that
    /// expired before `authzs_before`, with their index entries. Walks [`EXPIRY`] up to
    /// the cutoffs only, so a pass costs what it removes; a record found not expired (an
    /// authorization validated since, an order still processing) is filed again under its
    /// expiry, or `recheck_at` (after both cutoffs). The first pass over records from
    /// before [`EXPIRY`] reads them all once to file them. Accounts, replacement claims and
    /// certificates stay.
    pub async fn prune_expired(
        &self,
        orders_before: OffsetDateTime,
        authzs_before: OffsetDateTime,
        recheck_at: OffsetDateTime,
    ) -> Result<Pruned, Problem> {
        if self
            .kv
            .get(EXPIRY_INDEXED, String::new())
            .await
            .map_err(storage)?
            .is_none()
        {
            self.file_unindexed().await?;
        }
        Ok(Pruned {
            orders: self
                .prune_filed(Filed::Order, orders_before, recheck_at)
                .await?,
            authzs: self
                .prune_filed(Filed::Authz, authzs_before, recheck_at)
                .await?,
        })
    }

    /// File every order and authorization under its expiry (records from before
    /// [`EXPIRY`]), then mark it done.
    async fn file_unindexed(&self) -> Result<(), Problem> {
        for (namespace, kind) in [(ORDERS, Filed::Order), (AUTHZS, Filed::Authz)] {
            let mut after = None;
            loop {
                let page = self
                    .kv
                    .scan_after(namespace, String::new(), after.take(), EXPIRY_BATCH)
                    .await
                    .map_err(storage)?;
                let Some((last, _)) = page.last() else {
                    break;
                };
                after = Some(last.clone());
                for (id, value) in page {
                    let expires = match kind {
                        Filed::Order => decode::<OrderRecord>(&value).map(|o| o.expires),
                        Filed::Authz => decode::<AuthzRecord>(&value).map(|a| a.expires),
                    };
                    if let Ok(expires) = expires {
                        self.file(kind, expires, &id).await?;
                    }
                }
                tokio::task::yield_now().await;
            }
        }
        self.kv
            .put(EXPIRY_INDEXED, String::new(), Vec::new(), EVENTUALLY)
            .await
            .map_err(storage)
    }

    /// File record `id` of `kind` under `due` in [`EXPIRY`].
    async fn file(&self, kind: Filed, due: OffsetDateTime, id: &str) -> Result<(), Problem> {
        self.kv
            .put(EXPIRY, kind.key(due, id), Vec::new(), EVENTUALLY)
            .await
            .map_err(storage)
    }

    /// Take the records of `kind` filed under a time before `before`: remove those expired
    /// before it, file the others again.
    async fn prune_filed(
        &self,
        kind: Filed,
        before: OffsetDateTime,
        recheck_at: OffsetDateTime,
    ) -> Result<usize, Problem> {
        let prefix = kind.prefix();
        let (mut removed, mut after) = (0, None::<String>);
        loop {
            let page = self
                .kv
                .scan_after(EXPIRY, prefix.to_string(), after.take(), EXPIRY_BATCH)
                .await
                .map_err(storage)?;
            if page.is_empty() {
                return Ok(removed);
            }
            for (key, _) in page {
                after = Some(key.clone());
                let Some((due, id)) = key[prefix.len()..].split_once('/') else {
                    continue;
                };
                let Ok(due) = i64::from_str_radix(due, 16) else {
                    continue;
                };
                if due > before.unix_timestamp() {
                    return Ok(removed);
                }
                self.remove(EXPIRY, &key).await?;
                removed += match kind {
                    Filed::Order => self.prune_order(id, before, recheck_at).await?,
                    Filed::Authz => self.prune_authz(id, before).await?,
                };
            }
            // A store that answers at once would otherwise hold this worker for the whole
            // walk.
            tokio::task::yield_now().await;
        }
    }

    /// Remove order `id` if it expired before `before` and is not processing (1), or file
    /// it again (0).
    async fn prune_order(
        &self,
        id: &str,
        before: OffsetDateTime,
        recheck_at: OffsetDateTime,
    ) -> Result<usize, Problem> {
        match self.order(id).await.ok().flatten() {
            Some(order) if order.expires > before => {
                self.file(Filed::Order, order.expires, id).await?
            }
            Some(order) if order.status == OrderStatus::Processing => {
                self.file(Filed::Order, recheck_at, id).await?
            }
            Some(order) => {
                let index = account_order_key(&order.account_id, &order.id);
                self.remove(ACCOUNT_ORDERS, &index).await?;
                self.close_order(&order.account_id, &order.id).await?;
                self.remove(ORDERS, id).await?;
                return Ok(1);
            }
            None => {}
        }
        Ok(0)
    }

    /// Remove authorization `id` if it expired before `before` (1), or file it again (0).
    async fn prune_authz(&self, id: &str, before: OffsetDateTime) -> Result<usize, Problem> {
        match self.authz(id).await.ok().flatten() {
            Some(authz) if authz.expires > before => {
                self.file(Filed::Authz, authz.expires, id).await?
            }
            Some(authz) => {
                self.remove(ACCOUNT_AUTHZS, &account_authz_key(&authz))
                    .await?;
                self.remove(AUTHZS, id).await?;
                return Ok(1);
            }
            None => {}
        }
        Ok(0)
    }

    async fn remove(&self, namespace: &'static str, key: &str) -> Result<(), Problem> {
        self.kv
            .remove(namespace, key.to_string(), EVENTUALLY)
            .await
            .map_err(storage)
    }

    /// The account's authorizations for `identifier`.
    pub async fn authzs_for(
        &self,
        account_id: &str,
        identifier: &Identifier,
    ) -> Result<Vec<AuthzRecord>, Problem> {
        let prefix = format!("{account_id}/{}/", identifier_key(identifier));
        let mut out = Vec::new();
        for (key, _) in self
            .kv
            .scan(ACCOUNT_AUTHZS, prefix.clone())
            .await
            .map_err(storage)?
        {
            if let Some(authz) = self.authz(&key[prefix.len()..]).await? {
                out.push(authz);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn order(id: &str, expires: OffsetDateTime) -> OrderRecord {
        OrderRecord {
            id: id.into(),
            account_id: "acct".into(),
            profile: "default".into(),
            status: OrderStatus::Pending,
            identifiers: vec![],
            authz_ids: vec![],
            expires,
            error: None,
            certificate_serial: None,
            certificate_profile: String::new(),
            pending_request: None,
            replaces: None,
            created_at: expires - Duration::days(7),
        }
    }

    async fn orders(records: &Records) -> Vec<String> {
        let stored = records.kv.scan(ORDERS, String::new()).await.unwrap();
        stored.into_iter().map(|(id, _)| id).collect()
    }

    #[tokio::test]
    async fn records_from_before_the_expiry_index_are_filed_once_then_only_the_index_is_walked() {
        let records = Records::new(Box::new(MemoryKv::default()));
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let legacy = |id: &str, expires| {
            let record = order(id, expires);
            records
                .kv
                .put(ORDERS, id.to_string(), encode(&record), EVENTUALLY)
        };
        // Written before the index existed: one long expired, one not yet.
        legacy("old", now - Duration::days(60)).await.unwrap();
        legacy("recent", now + Duration::days(1)).await.unwrap();
        records
            .put_order(&order("new", now + Duration::days(2)), true)
            .await
            .unwrap();
        let cutoff = now - Duration::days(30);
        let pruned = records.prune_expired(cutoff, cutoff, now).await.unwrap();
        assert_eq!(pruned.orders, 1);
        assert_eq!(orders(&records).await, ["new", "recent"]);

        // From now on only what is filed is looked at: an order that somehow escaped the
        // index is not found, the filed ones go once expired past the cutoff.
        legacy("unfiled", now - Duration::days(60)).await.unwrap();
        let later = now + Duration::days(40);
        let cutoff = later - Duration::days(30);
        let pruned = records.prune_expired(cutoff, cutoff, later).await.unwrap();
        assert_eq!(pruned.orders, 2);
        assert_eq!(orders(&records).await, ["unfiled"]);
        let filed = records.kv.scan(EXPIRY, String::new()).await.unwrap();
        assert!(filed.is_empty(), "{filed:?}");
    }

    #[tokio::test]
    async fn an_order_still_processing_is_filed_again_for_later() {
        let records = Records::new(Box::new(MemoryKv::default()));
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let mut processing = order("waits", now - Duration::days(60));
        processing.status = OrderStatus::Processing;
        records.put_order(&processing, true).await.unwrap();
        let cutoff = now - Duration::days(30);
        let pruned = records.prune_expired(cutoff, cutoff, now).await.unwrap();
        assert_eq!(pruned.orders, 0);
        let filed = records.kv.scan(EXPIRY, String::new()).await.unwrap();
        assert_eq!(filed.len(), 1);
        assert_eq!(filed[0].0, Filed::Order.key(now, "waits"));

        processing.status = OrderStatus::Invalid;
        records.put_order(&processing, false).await.unwrap();
        let later = now + Duration::days(31);
        let pruned = records
            .prune_expired(later - Duration::days(30), cutoff, later)
            .await
            .unwrap();
        assert_eq!(pruned.orders, 1);
    }
}
