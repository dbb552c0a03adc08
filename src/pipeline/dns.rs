//! DNS facts for policy layer 2's DNS checks: each requested name's A/AAAA addresses and
//! its zone (the closest enclosing name with an SOA record), through hickory-resolver at
//! `[policy] dns_resolver` or the system's resolvers. Looked up only when a role with DNS
//! checks is involved; a failed look-up becomes a fact ("does not resolve") that denies.
//!
//! One resolver serves every request ([`PolicyDns`]): made at the first check, again when
//! the configured nameserver changes or the policy is reloaded (so a reload also reads the
//! system's resolver configuration again). It keeps answers for at most
//! [`POSITIVE_MAX_TTL`] and never keeps a negative one: a name an operator has just added
//! passes at the next request. A request's names are looked up at the same time, and each
//! name's addresses beside its zone.
//!
//! Imports `config` and `policy::names` (the fact types).

use std::net::SocketAddr;
use std::sync::Mutex;
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

/// The longest an answer is reused, whatever its TTL: a record moved out of a role's
/// ranges stops passing within this.
pub const POSITIVE_MAX_TTL: Duration = Duration::from_secs(60);

/// Answers kept (hickory's cache counts one per query name and type).
const CACHE_ENTRIES: usize = 1024;

/// The resolver of policy DNS checks, shared by every request.
#[derive(Default)]
pub struct PolicyDns {
    /// The resolver and the nameserver it was made for (`None`: the system's).
    current: Mutex<Option<(Option<SocketAddr>, TokioResolver)>>,
}

impl std::fmt::Debug for PolicyDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyDns").finish_non_exhaustive()
    }
}

impl PolicyDns {
    /// Forget the resolver (its cache with it): the next check makes a new one.
    pub fn clear(&self) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The resolver for `settings`: the one made before when it is for the same nameserver.
    /// A system configuration that cannot be read is not remembered: the next check tries
    /// again.
    fn resolver(&self, settings: &PolicySettingsConfig) -> Result<TokioResolver, String> {
        let nameserver = settings.resolver_addr();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((made_for, resolver)) = current.as_ref() {
            if *made_for == nameserver {
                return Ok(resolver.clone());
            }
        }
        let resolver = build(nameserver)?;
        *current = Some((nameserver, resolver.clone()));
        Ok(resolver)
    }

    /// Look up every DNS identifier's facts (wildcards by their base name).
    pub async fn facts(
        &self,
        settings: &PolicySettingsConfig,
        identifiers: &[Identifier],
    ) -> DnsFactsMap {
        let mut names: Vec<&str> = identifiers
            .iter()
            .filter_map(|identifier| match identifier {
                Identifier::Dns(name) => Some(looked_up_name(name)),
                _ => None,
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        let resolver = match self.resolver(settings) {
            Ok(resolver) => resolver,
            Err(why) => {
                return names
                    .into_iter()
                    .map(|name| {
                        let facts = DnsFacts {
                            addresses: Err(why.clone()),
                            zone: Err(why.clone()),
                        };
                        (name.to_string(), facts)
                    })
                    .collect();
            }
        };
        let mut lookups = tokio::task::JoinSet::new();
        for name in names {
            let (resolver, name) = (resolver.clone(), name.to_string());
            lookups.spawn(async move {
                let (addresses, zone) =
                    tokio::join!(addresses(&resolver, &name), zone(&resolver, &name));
                (name, DnsFacts { addresses, zone })
            });
        }
        let mut map = DnsFactsMap::new();
        while let Some(joined) = lookups.join_next().await {
            // A look-up task cannot panic short of a bug in the resolver; its name then has
            // no facts, which the check reads as "not looked up" and denies.
            if let Ok((name, facts)) = joined {
                map.insert(name, facts);
            }
        }
        map
    }
}

/// A resolver for `nameserver` (or the system's), without `/etc/hosts`.
fn build(nameserver: Option<SocketAddr>) -> Result<TokioResolver, String> {
    let (config, mut opts) = match nameserver {
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
    opts.cache_size = CACHE_ENTRIES;
    opts.positive_max_ttl = Some(POSITIVE_MAX_TTL);
    opts.negative_min_ttl = None;
    opts.negative_max_ttl = Some(Duration::ZERO);
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
