//! DNS facts for policy layer 2's DNS checks: each requested name's A/AAAA addresses and
//! its zone (the closest enclosing name with an SOA record), through hickory-resolver at
//! `[policy] dns_resolver` or the system's resolvers. Looked up only when a role with DNS
//! checks is involved; a failed look-up becomes a fact ("does not resolve") that denies.
//!
//! Imports `config` and `policy::names` (the fact types).

use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::{Name, TokioResolver};

use crate::config::PolicySettingsConfig;
use crate::model::Identifier;
use crate::policy::names::{looked_up_name, DnsFacts, DnsFactsMap};

/// Time limit of one query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// A resolver for the configured nameserver (or the system's), without `/etc/hosts`.
fn resolver(settings: &PolicySettingsConfig) -> Result<TokioResolver, String> {
    let (config, mut opts) = match settings.resolver_addr() {
        Some(addr) => (
            ResolverConfig::from_parts(
                None,
                Vec::new(),
                NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true),
            ),
            ResolverOpts::default(),
        ),
        None => hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?,
    };
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = 1;
    Ok(
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build(),
    )
}

fn fqdn(name: &str) -> Result<Name, String> {
    let mut parsed = Name::from_ascii(name).map_err(|e| format!("not a DNS name: {e}"))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// Look up every DNS identifier's facts (wildcards by their base name).
pub async fn facts(settings: &PolicySettingsConfig, identifiers: &[Identifier]) -> DnsFactsMap {
    let mut map = DnsFactsMap::new();
    let resolver = match resolver(settings) {
        Ok(resolver) => resolver,
        Err(why) => {
            for identifier in identifiers {
                if let Identifier::Dns(name) = identifier {
                    map.insert(
                        looked_up_name(name).to_string(),
                        DnsFacts {
                            addresses: Err(why.clone()),
                            zone: Err(why.clone()),
                        },
                    );
                }
            }
            return map;
        }
    };
    for identifier in identifiers {
        let Identifier::Dns(name) = identifier else {
            continue;
        };
        let name = looked_up_name(name);
        if map.contains_key(name) {
            continue;
        }
        let facts = DnsFacts {
            addresses: addresses(&resolver, name).await,
            zone: zone(&resolver, name).await,
        };
        map.insert(name.to_string(), facts);
    }
    map
}

async fn addresses(resolver: &TokioResolver, name: &str) -> Result<Vec<std::net::IpAddr>, String> {
    let lookup = resolver
        .lookup_ip(fqdn(name)?)
        .await
        .map_err(|e| describe(&e))?;
    let addresses: Vec<_> = lookup.iter().collect();
    if addresses.is_empty() {
        return Err("no A or AAAA records".into());
    }
    Ok(addresses)
}

/// The closest enclosing name (the name itself, then each parent) that has an SOA record.
async fn zone(resolver: &TokioResolver, name: &str) -> Result<String, String> {
    let mut candidate = name;
    loop {
        if let Ok(lookup) = resolver.lookup(fqdn(candidate)?, RecordType::SOA).await {
            let apex = lookup.records().iter().find(|r| {
                r.record_type() == RecordType::SOA
                    && r.name()
                        .to_ascii()
                        .trim_end_matches('.')
                        .eq_ignore_ascii_case(candidate)
            });
            if apex.is_some() {
                return Ok(candidate.to_ascii_lowercase());
            }
        }
        match candidate.split_once('.') {
            Some((_, parent)) if !parent.is_empty() => candidate = parent,
            _ => return Err(format!("no SOA record above `{name}`")),
        }
    }
}

fn describe(error: &hickory_resolver::ResolveError) -> String {
    if error.is_nx_domain() {
        "NXDOMAIN".into()
    } else if error.is_no_records_found() {
        "no A or AAAA records".into()
    } else {
        format!("look-up failed: {error}")
    }
}
