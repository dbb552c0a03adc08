//! DNS for the validators. Every validation gets a fresh hickory resolver with caching
//! disabled (a client may fix its records and retry), pointed at the configured
//! nameserver or the system configuration; `/etc/hosts` is never consulted. Address
//! lookups apply the target policy, and [`PolicyResolver`] plugs the same lookup into
//! reqwest so every host http-01 connects to (redirects included) goes through it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{Name, ResolveError, TokioResolver};

use super::target::{check_address, refusal, Target};
use super::ValidationError;

/// How to build a resolver for one validation.
#[derive(Clone)]
pub(crate) struct DnsSettings {
    config: ResolverConfig,
    opts: ResolverOpts,
}

impl DnsSettings {
    /// Uses `nameserver` when given, else the system configuration. Per-query timeouts
    /// are capped at the validation `timeout`.
    pub(crate) fn new(
        nameserver: Option<SocketAddr>,
        timeout: Duration,
    ) -> Result<Self, ValidationError> {
        let (config, mut opts) = match nameserver {
            Some(addr) => {
                let servers =
                    NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
                (
                    ResolverConfig::from_parts(None, Vec::new(), servers),
                    ResolverOpts::default(),
                )
            }
            None => hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                ValidationError::Dns(format!("cannot read system resolver configuration: {e}"))
            })?,
        };
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.timeout = opts.timeout.min(timeout);
        Ok(Self { config, opts })
    }

    /// A new resolver with no shared cache.
    pub(crate) fn resolver(&self) -> TokioResolver {
        TokioResolver::builder_with_config(self.config.clone(), TokioConnectionProvider::default())
            .with_options(self.opts.clone())
            .build()
    }
}

/// Parses `domain` as a fully-qualified name (no search list), refusing wildcards.
pub(crate) fn fqdn(domain: &str) -> Result<Name, ValidationError> {
    if domain.split('.').any(|label| label == "*") {
        return Err(ValidationError::Dns(format!(
            "cannot look up wildcard name {domain:?}"
        )));
    }
    let mut name = Name::from_ascii(domain)
        .map_err(|e| ValidationError::Dns(format!("invalid domain name {domain:?}: {e}")))?;
    name.set_fqdn(true);
    Ok(name)
}

/// Describes a failed lookup of `record` at `name` for a [`ValidationError::Dns`].
pub(crate) fn describe_lookup_error(record: &str, name: &str, error: &ResolveError) -> String {
    if error.is_nx_domain() {
        format!("NXDOMAIN looking up {record} for {name}")
    } else if error.is_no_records_found() {
        format!("no {record} records found for {name}")
    } else {
        format!("{record} lookup for {name} failed: {error}")
    }
}

/// Resolves `host` to its A and AAAA addresses, keeping only those the policy allows.
/// Lookup failures are [`ValidationError::Dns`]; having only refused addresses is a
/// [`ValidationError::Connection`] naming them.
pub(crate) async fn lookup_addresses(
    resolver: &TokioResolver,
    host: &str,
    allow_private: bool,
) -> Result<Vec<IpAddr>, ValidationError> {
    let name = fqdn(host)?;
    let lookup = resolver
        .lookup_ip(name)
        .await
        .map_err(|e| ValidationError::Dns(describe_lookup_error("A/AAAA", host, &e)))?;
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for ip in lookup.iter() {
        match refusal(ip, allow_private) {
            None => allowed.push(ip),
            Some(why) => refused.push(why),
        }
    }
    tracing::debug!(host, ?allowed, ?refused, "resolved validation target");
    if allowed.is_empty() {
        return Err(if refused.is_empty() {
            ValidationError::Dns(format!("no A/AAAA records found for {host}"))
        } else {
            ValidationError::Connection(format!(
                "{host} has no acceptable address ({})",
                refused.join("; ")
            ))
        });
    }
    Ok(allowed)
}

/// The addresses to connect to for `target`: the literal for an IP (checked against the
/// policy), the policy-filtered lookup result for a name.
pub(crate) async fn target_addresses(
    resolver: &TokioResolver,
    target: &Target,
    allow_private: bool,
) -> Result<Vec<IpAddr>, ValidationError> {
    match target {
        Target::Ip(ip) => check_address(*ip, allow_private).map(|()| vec![*ip]),
        Target::Dns(name) => lookup_addresses(resolver, name, allow_private).await,
    }
}

/// reqwest name resolution through [`lookup_addresses`]. Errors are boxed
/// [`ValidationError`]s so the caller can recover their kind from the error chain.
/// (reqwest does not resolve IP literals; the caller checks those itself.)
pub(crate) struct PolicyResolver {
    resolver: TokioResolver,
    allow_private: bool,
}

impl PolicyResolver {
    pub(crate) fn new(resolver: TokioResolver, allow_private: bool) -> Self {
        Self {
            resolver,
            allow_private,
        }
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.resolver.clone();
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ips = lookup_addresses(&resolver, &host, allow_private).await?;
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{a_record, DnsResponder};
    use super::*;

    fn settings(addr: SocketAddr) -> DnsSettings {
        DnsSettings::new(Some(addr), Duration::from_secs(2)).unwrap()
    }

    #[test]
    fn fqdn_rejects_wildcards_and_garbage() {
        assert!(fqdn("*.example.com").is_err());
        assert!(fqdn("a..b").is_err());
        assert!(fqdn("_acme-challenge.example.com").unwrap().is_fqdn());
    }

    #[tokio::test]
    async fn lookup_filters_by_policy() {
        let dns = DnsResponder::start(vec![a_record("example.test", [127, 0, 0, 1])]).await;
        let resolver = settings(dns.addr).resolver();
        let ips = lookup_addresses(&resolver, "example.test", true)
            .await
            .unwrap();
        assert_eq!(ips, vec![IpAddr::from([127, 0, 0, 1])]);
        let err = lookup_addresses(&resolver, "example.test", false)
            .await
            .unwrap_err();
        assert!(matches!(err, ValidationError::Connection(ref m) if m.contains("loopback")));
        let err = lookup_addresses(&resolver, "missing.test", true)
            .await
            .unwrap_err();
        assert!(matches!(err, ValidationError::Dns(_)), "{err:?}");
    }

    #[tokio::test]
    async fn private_addresses_in_a_mixed_answer_are_never_connect_targets() {
        // A rebinding-style answer: one public, one private address. The addresses
        // returned are the only ones connected to (no second lookup happens), so the
        // private one can never be reached.
        let dns = DnsResponder::start(vec![
            a_record("mixed.test", [127, 0, 0, 1]),
            a_record("mixed.test", [1, 1, 1, 1]),
        ])
        .await;
        let resolver = settings(dns.addr).resolver();
        let ips = lookup_addresses(&resolver, "mixed.test", false)
            .await
            .unwrap();
        assert_eq!(ips, vec![IpAddr::from([1, 1, 1, 1])]);
        let target = Target::Dns("mixed.test".into());
        let ips = target_addresses(&resolver, &target, false).await.unwrap();
        assert_eq!(ips, vec![IpAddr::from([1, 1, 1, 1])]);
    }
}
