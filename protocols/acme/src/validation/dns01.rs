//! dns-01 (RFC 8555 §8.4): look up TXT at `_acme-challenge.<domain>` (CNAMEs followed,
//! nothing cached) and look for [`dns01_txt_value`] of the key authorization.

use super::resolver::{describe_lookup_error, fqdn};
use super::{dns01_txt_value, Shared, ValidationError};

pub(super) async fn validate(
    shared: &Shared,
    domain: &str,
    key_authorization: &str,
) -> Result<(), ValidationError> {
    let expected = dns01_txt_value(key_authorization);
    let name = format!("_acme-challenge.{}", domain.trim_end_matches('.'));
    let query = fqdn(&name)?;
    tracing::debug!(%name, "dns-01: looking up TXT");
    let lookup = shared
        .resolver
        .txt_lookup(query)
        .await
        .map_err(|e| ValidationError::Dns(describe_lookup_error("TXT", &name, &e)))?;

    // A record split into several character-strings counts as their concatenation.
    let values: Vec<Vec<u8>> = lookup.iter().map(|txt| txt.txt_data().concat()).collect();
    tracing::debug!(%name, count = values.len(), "dns-01: TXT records received");
    if values.is_empty() {
        return Err(ValidationError::Dns(format!(
            "no TXT records found for {name}"
        )));
    }
    if values.iter().any(|value| value == expected.as_bytes()) {
        return Ok(());
    }
    Err(ValidationError::Unauthorized(format!(
        "incorrect TXT record at {name}: {} record(s) found, none equals the expected value {expected:?}",
        values.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{cname_record, settings, txt_record, DnsResponder};
    use super::super::{ValidationSettings, Validator};
    use super::*;

    const KEY_AUTHZ: &str = "token.thumbprint";

    async fn setup(txt: Vec<Vec<&str>>) -> (DnsResponder, Validator) {
        let records = txt
            .into_iter()
            .map(|strings| txt_record("_acme-challenge.example.test", strings))
            .collect();
        let dns = DnsResponder::start(records).await;
        let v = Validator::new(settings(Some(dns.addr))).unwrap();
        (dns, v)
    }

    #[tokio::test]
    async fn matching_record_passes() {
        let good = dns01_txt_value(KEY_AUTHZ);
        let (_dns, v) = setup(vec![vec!["unrelated"], vec![good.as_str()]]).await;
        v.dns01("example.test", KEY_AUTHZ).await.unwrap();
        // Trailing dot and concatenated character-strings are fine too.
        let (head, tail) = good.split_at(10);
        let (_dns, v) = setup(vec![vec![head, tail]]).await;
        v.dns01("example.test.", KEY_AUTHZ).await.unwrap();
    }

    #[tokio::test]
    async fn wrong_record_is_unauthorized() {
        let (_dns, v) = setup(vec![vec!["nope"], vec!["still-nope"]]).await;
        let err = v.dns01("example.test", KEY_AUTHZ).await.unwrap_err();
        assert!(
            matches!(err, ValidationError::Unauthorized(ref m) if m.contains("2 record(s)")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn nxdomain_is_dns_error() {
        let (_dns, v) = setup(vec![vec!["x"]]).await;
        let err = v.dns01("other.test", KEY_AUTHZ).await.unwrap_err();
        assert!(
            matches!(err, ValidationError::Dns(ref m) if m.contains("NXDOMAIN")),
            "{err:?}"
        );
        assert_eq!(err.acme_type(), "dns");
    }

    #[tokio::test]
    async fn cname_is_followed() {
        let good = dns01_txt_value(KEY_AUTHZ);
        let dns = DnsResponder::start(vec![
            cname_record("_acme-challenge.example.test", "delegated.example.net."),
            txt_record("delegated.example.net", vec![good.as_str()]),
        ])
        .await;
        let v = Validator::new(settings(Some(dns.addr))).unwrap();
        v.dns01("example.test", KEY_AUTHZ).await.unwrap();
    }

    #[tokio::test]
    async fn silent_nameserver_is_dns_error() {
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let v = Validator::new(ValidationSettings {
            timeout: std::time::Duration::from_millis(300),
            ..settings(Some(silent.local_addr().unwrap()))
        })
        .unwrap();
        let err = v.dns01("example.test", KEY_AUTHZ).await.unwrap_err();
        assert!(matches!(err, ValidationError::Dns(_)), "{err:?}");
    }

    #[tokio::test]
    async fn records_are_not_cached() {
        let good = dns01_txt_value(KEY_AUTHZ);
        let (dns, v) = setup(vec![vec!["old"]]).await;
        assert!(v.dns01("example.test", KEY_AUTHZ).await.is_err());
        dns.set_records(vec![txt_record(
            "_acme-challenge.example.test",
            vec![good.as_str()],
        )]);
        v.dns01("example.test", KEY_AUTHZ).await.unwrap();
    }
}
