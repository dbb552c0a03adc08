//! CAA checking (RFC 8659) with the RFC 8657 `accounturi` and `validationmethods`
//! parameters.
//!
//! The relevant RRset is found by climbing from the requested name towards the root
//! (RFC 8659 §3): the first name with a non-empty CAA RRset wins (CNAMEs are followed by
//! the resolver within each lookup). NXDOMAIN and NODATA just mean "go up"; any other
//! lookup failure (SERVFAIL, REFUSED, timeout, …) forbids issuance as a
//! [`ValidationError::Dns`]. A set that forbids issuance is a [`ValidationError::Caa`].
//!
//! Property values are parsed from the raw RDATA with the RFC 8659 §4.2 grammar rather
//! than through hickory's lenient issuer parser; a value that does not match the grammar
//! counts as an empty issuer (it forbids, and authorizes nobody).

use std::net::IpAddr;

use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::caa::{Property, CAA};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::ResolveError;

use super::resolver::fqdn;
use super::{Shared, ValidationError};

/// What the caller is asking to issue, and as whom.
pub(super) struct Request<'a> {
    /// DNS name without `*.`.
    pub(super) domain: &'a str,
    /// Whether the certificate name is `*.<domain>`.
    pub(super) wildcard: bool,
    /// Issuer domain names identifying this CA in CAA records.
    pub(super) issuer_domains: &'a [String],
    /// The ACME account URI (RFC 8657 `accounturi`).
    pub(super) account_uri: &'a str,
    /// The ACME validation method (RFC 8657 `validationmethods`).
    pub(super) method: &'a str,
}

pub(super) async fn check(shared: &Shared, request: Request<'_>) -> Result<(), ValidationError> {
    if request.issuer_domains.is_empty() {
        tracing::debug!(
            domain = request.domain,
            "CAA: no issuer domains configured, skipped"
        );
        return Ok(());
    }
    // A "*." prefix passed by mistake still means a wildcard request for the base name.
    let (domain, wildcard) = match request.domain.strip_prefix("*.") {
        Some(base) => (base, true),
        None => (request.domain, request.wildcard),
    };
    let domain = domain.trim_end_matches('.');
    // CAA is defined for domain names; IP address identifiers are not checked.
    if domain.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    fqdn(domain)?;
    if domain.is_empty() {
        return Err(ValidationError::Dns("empty domain name".into()));
    }

    let resolver = shared.resolver.clone();
    let labels: Vec<&str> = domain.split('.').collect();
    for start in 0..labels.len() {
        let name = labels[start..].join(".");
        tracing::debug!(%name, "CAA: looking up");
        let set: Vec<CAA> = match resolver.lookup(fqdn(&name)?, RecordType::CAA).await {
            Ok(lookup) => lookup
                .record_iter()
                .filter_map(|record| match record.data() {
                    RData::CAA(caa) => Some(caa.clone()),
                    _ => None,
                })
                .collect(),
            Err(error) if is_absent(&error) => Vec::new(),
            Err(error) => {
                return Err(ValidationError::Dns(format!(
                    "CAA lookup for {name} failed: {}",
                    describe_failure(&error)
                )))
            }
        };
        if set.is_empty() {
            continue;
        }
        tracing::debug!(%name, count = set.len(), "CAA: relevant RRset found");
        return evaluate(&name, &set, wildcard, &request).map_err(ValidationError::Caa);
    }
    tracing::debug!(domain, "CAA: no records up to the root");
    Ok(())
}

/// NXDOMAIN or NOERROR without CAA records: the name has no CAA RRset (climb on).
/// Everything else (SERVFAIL, REFUSED, timeouts, I/O) is a lookup failure.
fn is_absent(error: &ResolveError) -> bool {
    match error.proto().map(|proto| proto.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => {
            matches!(
                *response_code,
                ResponseCode::NXDomain | ResponseCode::NoError
            )
        }
        _ => false,
    }
}

/// A short description of a failed lookup (hickory reports SERVFAIL as "no records found
/// … ServFail", which reads like an empty answer).
fn describe_failure(error: &ResolveError) -> String {
    match error.proto().map(|proto| proto.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => {
            format!("server answered {response_code}")
        }
        _ => error.to_string(),
    }
}

/// Applies RFC 8659 §4 / RFC 8657 to the relevant RRset found at `found_at`; `Err` says
/// why issuance is forbidden.
fn evaluate(
    found_at: &str,
    set: &[CAA],
    wildcard: bool,
    request: &Request<'_>,
) -> Result<(), String> {
    // §4.1: a critical property we do not understand forbids issuance.
    if let Some(caa) = set
        .iter()
        .find(|caa| caa.issuer_critical() && matches!(caa.tag(), Property::Unknown(_)))
    {
        return Err(format!(
            "CAA at {found_at} has a critical property {:?} this CA does not understand",
            caa.tag().as_str()
        ));
    }

    // §4.3: issuewild, when present, replaces issue for wildcard names; otherwise issue.
    let has_issuewild = set.iter().any(|caa| caa.tag().is_issuewild());
    let (tag, chosen): (&str, Vec<&CAA>) = if wildcard && has_issuewild {
        (
            "issuewild",
            set.iter().filter(|c| c.tag().is_issuewild()).collect(),
        )
    } else {
        ("issue", set.iter().filter(|c| c.tag().is_issue()).collect())
    };
    if chosen.is_empty() {
        return Ok(());
    }

    let ours: Vec<String> = request
        .issuer_domains
        .iter()
        .map(|d| normalize_issuer(d))
        .collect();
    let mut others: Vec<String> = Vec::new();
    let mut refusals: Vec<String> = Vec::new();
    for caa in chosen {
        let Some(value) = IssueValue::parse(caa.raw_value()) else {
            continue; // malformed: same as an empty issuer-domain-name
        };
        let Some(issuer) = value.issuer else {
            continue; // `issue ";"`: authorizes nobody
        };
        let issuer = normalize_issuer(issuer);
        if !ours.contains(&issuer) {
            if !others.contains(&issuer) {
                others.push(issuer);
            }
            continue;
        }
        match value.refusal(request.account_uri, request.method) {
            None => return Ok(()),
            Some(why) => refusals.push(format!("{tag} {issuer:?} {why}")),
        }
    }

    Err(if !refusals.is_empty() {
        format!(
            "CAA at {found_at} does not authorize this request: {}",
            refusals.join("; ")
        )
    } else if !others.is_empty() {
        let list: Vec<String> = others.iter().map(|o| format!("{o:?}")).collect();
        format!("CAA at {found_at} allows only {} ({tag})", list.join(", "))
    } else {
        format!("CAA at {found_at} forbids all issuance ({tag} with no valid issuer)")
    })
}

/// Lowercase, without a trailing dot.
fn normalize_issuer(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

/// A parsed `issue`/`issuewild` value (RFC 8659 §4.2).
#[derive(Debug, PartialEq, Eq)]
struct IssueValue<'a> {
    /// The issuer-domain-name, `None` when empty.
    issuer: Option<&'a str>,
    /// Parameters in order, tags as written.
    parameters: Vec<(&'a str, &'a str)>,
}

impl<'a> IssueValue<'a> {
    /// Parses `issue-value`; `None` when it does not match the grammar:
    ///
    /// ```text
    /// issue-value = *WSP [issuer-domain-name *WSP] [";" *WSP [parameters *WSP]]
    /// issuer-domain-name = label *("." label)
    /// label = (ALPHA / DIGIT) *( *("-") (ALPHA / DIGIT))
    /// parameters = (parameter *WSP ";" *WSP parameters) / parameter
    /// parameter = parameter-tag *WSP "=" *WSP parameter-value
    /// parameter-tag = (ALPHA / DIGIT) *( *("-") (ALPHA / DIGIT))
    /// parameter-value = *(%x21-3A / %x3C-7E)
    /// ```
    fn parse(raw: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(raw).ok()?;
        if !text.is_ascii() {
            return None;
        }
        let (head, tail) = match text.split_once(';') {
            Some((head, tail)) => (head, Some(tail)),
            None => (text, None),
        };
        let issuer = trim_wsp(head);
        let issuer = if issuer.is_empty() {
            None
        } else if issuer.split('.').all(is_label) {
            Some(issuer)
        } else {
            return None;
        };
        let mut parameters = Vec::new();
        if let Some(tail) = tail {
            let tail = trim_wsp(tail);
            if !tail.is_empty() {
                for parameter in tail.split(';') {
                    let (tag, value) = trim_wsp(parameter).split_once('=')?;
                    let tag = trim_wsp(tag);
                    let value = trim_wsp(value);
                    let value_ok = value
                        .bytes()
                        .all(|b| (0x21..=0x3a).contains(&b) || (0x3c..=0x7e).contains(&b));
                    if !is_label(tag) || !value_ok {
                        return None;
                    }
                    parameters.push((tag, value));
                }
            }
        }
        Some(Self { issuer, parameters })
    }

    /// Why the RFC 8657 parameters do not permit `account_uri` with `method`; `None` when
    /// they do. Parameter tags match case-insensitively, values exactly; a repeated
    /// `accounturi` or `validationmethods` makes the property unusable. Other parameters
    /// are ignored.
    fn refusal(&self, account_uri: &str, method: &str) -> Option<String> {
        let values = |key: &str| -> Vec<&str> {
            self.parameters
                .iter()
                .filter(|(tag, _)| tag.eq_ignore_ascii_case(key))
                .map(|(_, value)| *value)
                .collect()
        };
        let accounts = values("accounturi");
        match accounts.as_slice() {
            [] => {}
            [only] if *only == account_uri => {}
            [only] => return Some(format!("is restricted to account {only:?}")),
            _ => return Some("has more than one accounturi parameter".into()),
        }
        let methods = values("validationmethods");
        match methods.as_slice() {
            [] => {}
            [list] if list.split(',').any(|m| m == method) => {}
            [list] => {
                return Some(format!(
                    "is restricted to validation methods {list:?} (used {method:?})"
                ))
            }
            _ => return Some("has more than one validationmethods parameter".into()),
        }
        None
    }
}

fn trim_wsp(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// `(ALPHA / DIGIT) *( *("-") (ALPHA / DIGIT))`
fn is_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::{a_record, caa_record, cname_record, settings, DnsResponder};
    use super::super::{ValidationSettings, Validator};
    use super::*;

    const US: &str = "rampart.internal";
    const ACCOUNT: &str = "https://ca.test/acme/acct/1";

    fn us() -> Vec<String> {
        vec![US.to_owned()]
    }

    async fn setup(
        records: Vec<super::super::test_support::TestRecord>,
    ) -> (DnsResponder, Validator) {
        let dns = DnsResponder::start(records).await;
        let v = Validator::new(settings(Some(dns.addr))).unwrap();
        (dns, v)
    }

    /// `caa` for `www.example.test` (or `*.www.example.test`) with `method`.
    async fn check(v: &Validator, wildcard: bool, method: &str) -> Result<(), ValidationError> {
        v.caa("www.example.test", wildcard, &us(), ACCOUNT, method)
            .await
    }

    fn assert_caa(result: Result<(), ValidationError>, needle: &str) {
        match result {
            Err(ValidationError::Caa(ref message)) if message.contains(needle) => {
                assert_eq!(result.unwrap_err().acme_type(), "caa");
            }
            other => panic!("expected a CAA error containing {needle:?}, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn no_caa_anywhere_allows() {
        let (_dns, v) = setup(vec![a_record("www.example.test", [127, 0, 0, 1])]).await;
        check(&v, false, "http-01").await.unwrap();
        check(&v, true, "dns-01").await.unwrap();
    }

    #[tokio::test]
    async fn issue_for_us_at_parent_allows() {
        let (_dns, v) = setup(vec![
            a_record("www.example.test", [127, 0, 0, 1]),
            caa_record("example.test", 0, "issue", "Rampart.Internal"),
            caa_record("example.test", 0, "iodef", "mailto:security@example.test"),
            // Above the relevant set: never consulted.
            caa_record("test", 0, "issue", ";"),
        ])
        .await;
        check(&v, false, "http-01").await.unwrap();
        check(&v, true, "http-01").await.unwrap();
    }

    #[tokio::test]
    async fn closest_set_wins() {
        let (_dns, v) = setup(vec![
            caa_record("www.example.test", 0, "issue", "letsencrypt.org"),
            caa_record("example.test", 0, "issue", US),
        ])
        .await;
        assert_caa(check(&v, false, "http-01").await, "at www.example.test");
    }

    #[tokio::test]
    async fn other_ca_forbids() {
        let (_dns, v) = setup(vec![
            caa_record("example.test", 0, "issue", "letsencrypt.org"),
            caa_record(
                "example.test",
                0,
                "issue",
                "pki.goog; cansignhttpexchanges=yes",
            ),
        ])
        .await;
        let err = check(&v, false, "http-01").await.unwrap_err();
        assert_eq!(
            err,
            ValidationError::Caa(
                "CAA at example.test allows only \"letsencrypt.org\", \"pki.goog\" (issue)".into()
            )
        );
    }

    #[tokio::test]
    async fn empty_issuer_forbids_everyone() {
        let (_dns, v) = setup(vec![caa_record("example.test", 0, "issue", ";")]).await;
        assert_caa(check(&v, false, "http-01").await, "forbids all issuance");
        // Malformed values count as an empty issuer.
        let (_dns, v) = setup(vec![caa_record("example.test", 0, "issue", "%%%%%")]).await;
        assert_caa(check(&v, false, "http-01").await, "forbids all issuance");
    }

    #[tokio::test]
    async fn issuewild_restricts_only_wildcards() {
        let (_dns, v) = setup(vec![
            caa_record("example.test", 0, "issue", US),
            caa_record("example.test", 0, "issuewild", ";"),
        ])
        .await;
        check(&v, false, "http-01").await.unwrap();
        assert_caa(check(&v, true, "dns-01").await, "issuewild");

        // The reverse: issuewild for us, issue for someone else.
        let (_dns, v) = setup(vec![
            caa_record("example.test", 0, "issue", "letsencrypt.org"),
            caa_record("example.test", 0, "issuewild", US),
        ])
        .await;
        check(&v, true, "dns-01").await.unwrap();
        assert_caa(check(&v, false, "dns-01").await, "\"letsencrypt.org\"");
    }

    #[tokio::test]
    async fn issuewild_only_set_leaves_base_name_free() {
        let (_dns, v) = setup(vec![caa_record("example.test", 0, "issuewild", ";")]).await;
        check(&v, false, "http-01").await.unwrap();
        assert_caa(check(&v, true, "http-01").await, "forbids");
    }

    #[tokio::test]
    async fn accounturi_match_and_mismatch() {
        let value = format!("{US}; accounturi={ACCOUNT}");
        let (_dns, v) = setup(vec![caa_record("example.test", 0, "issue", &value)]).await;
        check(&v, false, "http-01").await.unwrap();
        let err = v
            .caa(
                "www.example.test",
                false,
                &us(),
                "https://ca.test/acme/acct/2",
                "http-01",
            )
            .await;
        assert_caa(err, "restricted to account \"https://ca.test/acme/acct/1\"");

        // Another record for us without the parameter authorizes every account.
        let (_dns, v) = setup(vec![
            caa_record("example.test", 0, "issue", &value),
            caa_record("example.test", 0, "issue", US),
        ])
        .await;
        v.caa(
            "www.example.test",
            false,
            &us(),
            "https://ca.test/acme/acct/2",
            "http-01",
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn validationmethods_restrict() {
        let (_dns, v) = setup(vec![caa_record(
            "example.test",
            0,
            "issue",
            "rampart.internal; validationmethods=dns-01",
        )])
        .await;
        check(&v, false, "dns-01").await.unwrap();
        assert_caa(
            check(&v, false, "http-01").await,
            "validation methods \"dns-01\"",
        );

        let (_dns, v) = setup(vec![caa_record(
            "example.test",
            0,
            "issue",
            &format!(
                "rampart.internal; accounturi={ACCOUNT}; validationmethods=tls-alpn-01,http-01"
            ),
        )])
        .await;
        check(&v, false, "http-01").await.unwrap();
        check(&v, false, "tls-alpn-01").await.unwrap();
        assert_caa(check(&v, false, "dns-01").await, "validation methods");
    }

    #[tokio::test]
    async fn critical_unknown_tag_forbids() {
        let (_dns, v) = setup(vec![
            caa_record("example.test", 0, "issue", US),
            caa_record("example.test", 128, "tbs", "unknown"),
        ])
        .await;
        assert_caa(
            check(&v, false, "http-01").await,
            "critical property \"tbs\"",
        );

        // Not critical: ignored. Critical known tags are fine.
        let (_dns, v) = setup(vec![
            caa_record("example.test", 128, "issue", US),
            caa_record("example.test", 0, "tbs", "unknown"),
        ])
        .await;
        check(&v, false, "http-01").await.unwrap();
    }

    #[tokio::test]
    async fn set_without_issue_properties_allows() {
        let (_dns, v) = setup(vec![caa_record(
            "example.test",
            0,
            "iodef",
            "mailto:security@example.test",
        )])
        .await;
        check(&v, false, "http-01").await.unwrap();
        check(&v, true, "http-01").await.unwrap();
    }

    #[tokio::test]
    async fn cname_target_set_is_used() {
        let (_dns, v) = setup(vec![
            cname_record("www.example.test", "cdn.example.net."),
            caa_record("cdn.example.net", 0, "issue", "letsencrypt.org"),
            caa_record("example.test", 0, "issue", US),
        ])
        .await;
        assert_caa(check(&v, false, "http-01").await, "\"letsencrypt.org\"");
    }

    #[tokio::test]
    async fn servfail_is_dns_error() {
        let (dns, v) = setup(vec![caa_record("test", 0, "issue", US)]).await;
        dns.set_servfail(&["example.test"]);
        let err = check(&v, false, "http-01").await.unwrap_err();
        assert!(
            matches!(err, ValidationError::Dns(ref m)
                if m == "CAA lookup for example.test failed: server answered Server Failure"),
            "{err:?}"
        );
        assert_eq!(err.acme_type(), "dns");
        // A failure below the relevant set is not skipped either.
        dns.set_servfail(&["www.example.test"]);
        let err = check(&v, false, "http-01").await.unwrap_err();
        assert!(matches!(err, ValidationError::Dns(_)), "{err:?}");
    }

    #[tokio::test]
    async fn silent_nameserver_is_dns_error() {
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let v = Validator::new(ValidationSettings {
            timeout: Duration::from_millis(300),
            ..settings(Some(silent.local_addr().unwrap()))
        })
        .unwrap();
        let err = check(&v, false, "http-01").await.unwrap_err();
        assert!(matches!(err, ValidationError::Dns(_)), "{err:?}");
    }

    #[tokio::test]
    async fn empty_issuer_domains_skip_the_check() {
        let (_dns, v) = setup(vec![caa_record("example.test", 128, "issue", ";")]).await;
        v.caa("www.example.test", false, &[], ACCOUNT, "http-01")
            .await
            .unwrap();
        // Even with no nameserver at all.
        let v = Validator::new(settings(None)).unwrap();
        v.caa("www.example.test", true, &[], ACCOUNT, "http-01")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn ip_addresses_and_bad_names() {
        let v = Validator::new(settings(None)).unwrap();
        v.caa("127.0.0.1", false, &us(), ACCOUNT, "http-01")
            .await
            .unwrap();
        v.caa("::1", false, &us(), ACCOUNT, "http-01")
            .await
            .unwrap();
        let err = v.caa("a..b", false, &us(), ACCOUNT, "http-01").await;
        assert!(matches!(err, Err(ValidationError::Dns(_))), "{err:?}");
    }

    #[tokio::test]
    async fn star_prefix_means_wildcard_and_trailing_dot_is_fine() {
        let (_dns, v) = setup(vec![
            caa_record("example.test", 0, "issue", US),
            caa_record("example.test", 0, "issuewild", ";"),
        ])
        .await;
        v.caa("www.example.test.", false, &us(), ACCOUNT, "http-01")
            .await
            .unwrap();
        let err = v
            .caa("*.www.example.test", false, &us(), ACCOUNT, "dns-01")
            .await;
        assert_caa(err, "issuewild");
    }

    #[test]
    fn issue_value_grammar() {
        fn parse(s: &str) -> Option<IssueValue<'_>> {
            IssueValue::parse(s.as_bytes())
        }
        assert_eq!(
            parse("ca.example"),
            Some(IssueValue {
                issuer: Some("ca.example"),
                parameters: vec![]
            })
        );
        assert_eq!(
            parse(";"),
            Some(IssueValue {
                issuer: None,
                parameters: vec![]
            })
        );
        assert_eq!(
            parse(""),
            Some(IssueValue {
                issuer: None,
                parameters: vec![]
            })
        );
        assert_eq!(
            parse(" ca-1.example ;\taccounturi = https://x/acct/1 ; validationmethods=dns-01 "),
            Some(IssueValue {
                issuer: Some("ca-1.example"),
                parameters: vec![
                    ("accounturi", "https://x/acct/1"),
                    ("validationmethods", "dns-01")
                ],
            })
        );
        assert_eq!(
            parse("; key=value"),
            Some(IssueValue {
                issuer: None,
                parameters: vec![("key", "value")]
            })
        );
        for bad in [
            "%%%%%",
            "ca..example",
            "-ca.example",
            "ca.example.",
            "ca example",
            "ca.example; novalue",
            "ca.example; k=v;",
            "ca.example; k=two words",
            "ca.example; -k=v",
            "ca.exämple",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parameter_rules() {
        let value = |s: &'static str| IssueValue::parse(s.as_bytes()).unwrap();
        let m = "http-01";
        assert!(value("ca; AccountURI=a").refusal("b", m).is_some());
        assert!(value("ca; accounturi=a").refusal("a", m).is_none());
        assert!(value("ca; accounturi=a; accounturi=a")
            .refusal("a", m)
            .is_some());
        assert!(value("ca; validationmethods=").refusal("a", m).is_some());
        assert!(value("ca; validationmethods=http-01,dns-01")
            .refusal("a", m)
            .is_none());
        assert!(value("ca; validationmethods=HTTP-01")
            .refusal("a", m)
            .is_some());
        assert!(
            value("ca; validationmethods=http-01; validationmethods=http-01")
                .refusal("a", m)
                .is_some()
        );
        assert!(value("ca; other=thing").refusal("a", m).is_none());
    }
}
