//! Layer 2, SAN validation: no requested name may match the global deny lists
//! (`[policy] deny_dns_names`, `deny_ip_ranges`), and every one must be allowed by one of
//! the roles that allowed the template (DNS names by pattern, IP addresses by range) — and,
//! for roles with DNS checks, by what the DNS says: the name resolves, its addresses fall in
//! the role's ranges, its zone is one the role owns.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{Denial, Layer};
use crate::config::{DnsChecksConfig, PolicySettingsConfig, RoleConfig};
use crate::model::Identifier;

/// Check every identifier against the global deny lists and the roles; the first refusal
/// decides.
pub fn check(
    settings: &PolicySettingsConfig,
    roles: &[(&str, &RoleConfig)],
    identifiers: &[Identifier],
    dns: Option<&DnsFactsMap>,
) -> Result<(), Denial> {
    if identifiers.is_empty() {
        return Err(Denial::new(
            Layer::Names,
            "no_identifiers",
            "the request names no DNS name or IP address (put them in the CSR's subjectAltName)",
        ));
    }
    if let Some((_, reason)) = globally_denied(settings, identifiers).into_iter().next() {
        return Err(Denial::new(Layer::Names, "identifier_denied", reason));
    }
    match refused(roles, identifiers, dns).into_iter().next() {
        Some(refusal) => Err(Denial::new(Layer::Names, refusal.rule, refusal.reason)),
        None => Ok(()),
    }
}

/// Every identifier a global deny list names, with the reason.
pub fn globally_denied(
    settings: &PolicySettingsConfig,
    identifiers: &[Identifier],
) -> Vec<(Identifier, String)> {
    identifiers
        .iter()
        .filter_map(|identifier| {
            let rule = match identifier {
                Identifier::Dns(name) => settings
                    .deny_dns_names
                    .iter()
                    .find(|p| p.matches(name) || p.matches(name.trim_start_matches("*.")))
                    .map(|p| p.as_str().to_string()),
                Identifier::Ip(ip) => settings
                    .deny_ip_ranges
                    .iter()
                    .find(|net| net.contains(ip))
                    .map(|net| net.to_string()),
                Identifier::Email(_) | Identifier::Uri(_) => None,
            }?;
            Some((
                identifier.clone(),
                format!(
                    "`{}` is denied to everyone ([policy] deny list: {rule})",
                    identifier.value()
                ),
            ))
        })
        .collect()
}

/// What the DNS says about a name, looked up by the pipeline for roles with DNS checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsFacts {
    /// Its A and AAAA addresses, or why there are none.
    pub addresses: Result<Vec<IpAddr>, String>,
    /// Its zone (the closest enclosing SOA), or why it could not be found.
    pub zone: Result<String, String>,
}

/// DNS facts by name (a wildcard request's facts are those of its base name).
pub type DnsFactsMap = BTreeMap<String, DnsFacts>;

/// The name whose DNS facts stand for `name` (`*.zone` → `zone`).
pub fn looked_up_name(name: &str) -> &str {
    name.strip_prefix("*.").unwrap_or(name)
}

/// Whether any of `roles` has DNS checks (the pipeline looks names up only then).
pub fn needs_dns(roles: &[(&str, &RoleConfig)]) -> bool {
    roles.iter().any(|(_, role)| role.dns_checks.is_some())
}

/// The role's DNS checks on `name`; `Err` says which failed.
fn dns_check(checks: &DnsChecksConfig, name: &str, facts: Option<&DnsFacts>) -> Result<(), String> {
    let Some(facts) = facts else {
        return Err(format!("`{name}` was not looked up in the DNS"));
    };
    let wildcard = name.starts_with("*.");
    if !wildcard && (checks.resolve || !checks.addresses_in.is_empty()) {
        let addresses = facts
            .addresses
            .as_ref()
            .map_err(|why| format!("`{name}` does not resolve ({why})"))?;
        if let Some(outside) = addresses.iter().find(|ip| {
            !checks.addresses_in.is_empty() && !checks.addresses_in.iter().any(|n| n.contains(*ip))
        }) {
            return Err(format!(
                "`{name}` resolves to {outside}, outside the role's address ranges"
            ));
        }
    }
    if !checks.zones.is_empty() {
        let zone = facts
            .zone
            .as_ref()
            .map_err(|why| format!("the DNS zone of `{name}` is unknown ({why})"))?;
        let owned = checks
            .zones
            .iter()
            .any(|z| z.trim_end_matches('.').eq_ignore_ascii_case(zone));
        if !owned {
            return Err(format!(
                "`{name}` is in DNS zone `{zone}`, which the role does not own"
            ));
        }
    }
    Ok(())
}

/// Whether an address's domain is one of `domains` (`example.com` exactly, `.example.com`
/// any subdomain of it).
fn email_allowed(domains: &[String], address: &str) -> bool {
    let Some((_, domain)) = address.rsplit_once('@') else {
        return false;
    };
    domains.iter().any(|allowed| {
        let allowed = allowed.to_ascii_lowercase();
        match allowed.strip_prefix('.') {
            Some(parent) => domain
                .strip_suffix(parent)
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            None => domain == allowed,
        }
    })
}

/// A name no role allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The name.
    pub identifier: Identifier,
    /// `identifier_not_allowed` (no pattern or range) or `dns_check_failed`.
    pub rule: &'static str,
    /// Why.
    pub reason: String,
}

/// Every identifier no role allows. `dns` holds the DNS facts when they were looked up;
/// `None` skips DNS checks (ACME newOrder asks before anything is looked up; finalize runs
/// the full pipeline).
pub fn refused(
    roles: &[(&str, &RoleConfig)],
    identifiers: &[Identifier],
    dns: Option<&DnsFactsMap>,
) -> Vec<Refusal> {
    identifiers
        .iter()
        .filter_map(|identifier| {
            let mut dns_failure = None;
            for (_, role) in roles {
                let allowed = match identifier {
                    Identifier::Dns(name) => {
                        if !role.dns_names.iter().any(|p| p.matches(name)) {
                            false
                        } else {
                            match (&role.dns_checks, dns) {
                                (Some(checks), Some(facts)) => {
                                    match dns_check(checks, name, facts.get(looked_up_name(name))) {
                                        Ok(()) => true,
                                        Err(why) => {
                                            dns_failure.get_or_insert(why);
                                            false
                                        }
                                    }
                                }
                                _ => true,
                            }
                        }
                    }
                    Identifier::Ip(ip) => role.ip_ranges.iter().any(|net| net.contains(ip)),
                    Identifier::Email(address) => email_allowed(&role.email_domains, address),
                    Identifier::Uri(uri) => role
                        .uri_prefixes
                        .iter()
                        .any(|prefix| !prefix.is_empty() && uri.starts_with(prefix.as_str())),
                };
                if allowed {
                    return None;
                }
            }
            Some(match dns_failure {
                Some(reason) => Refusal {
                    identifier: identifier.clone(),
                    rule: "dns_check_failed",
                    reason,
                },
                None => Refusal {
                    identifier: identifier.clone(),
                    rule: "identifier_not_allowed",
                    reason: format!("`{}` is not allowed for this identity", identifier.value()),
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Label boundaries, case, trailing dots, IDNs, wildcard requests against `*.` and `**.`,
    /// and CIDR edges, as the names layer sees them (names normalised by `Identifier`).
    #[test]
    fn patterns_and_ranges_at_their_edges() {
        let role = RoleConfig {
            templates: vec![],
            dns_names: ["*.dev.example", "**.prod.example", "xn--bcher-kva.example"]
                .iter()
                .map(|p| p.to_string().try_into().unwrap())
                .collect(),
            ip_ranges: vec![
                "10.0.0.0/24".parse().unwrap(),
                "2001:db8::/126".parse().unwrap(),
            ],
            email_domains: vec![],
            uri_prefixes: vec![],
            manage: false,
            dns_checks: None,
        };
        let roles = [("r", &role)];
        let allowed = |text: &str| -> Option<bool> {
            let id = match text.parse() {
                Ok(ip) => Identifier::Ip(ip),
                Err(_) => Identifier::dns(text).ok()?,
            };
            Some(refused(&roles, &[id], None).is_empty())
        };
        let cases: [(&str, Option<bool>); 18] = [
            ("api.dev.example", Some(true)),
            ("API.Dev.Example", Some(true)),    // case folds
            ("a.api.dev.example", Some(false)), // `*.` is exactly one label
            ("dev.example", Some(false)),       // not the zone itself
            ("baddev.example", Some(false)),    // label boundary
            ("*.dev.example", Some(true)),      // a wildcard request under `*.`
            ("*.x.dev.example", Some(false)),
            ("a.b.prod.example", Some(true)), // `**.` any depth
            ("*.b.prod.example", Some(true)),
            ("prod.example", Some(false)),
            ("xn--bcher-kva.example", Some(true)), // IDNs as punycode
            ("bücher.example", None),              // not as Unicode
            ("api.dev.example.", None),            // no trailing dot
            ("10.0.0.0", Some(true)),              // CIDR edges
            ("10.0.0.255", Some(true)),
            ("10.0.1.0", Some(false)),
            ("2001:db8::3", Some(true)),
            ("2001:db8::4", Some(false)),
        ];
        for (text, expected) in cases {
            assert_eq!(allowed(text), expected, "{text}");
        }
    }

    #[test]
    fn dns_checks_decide_by_addresses_zone_and_resolution() {
        let checks = DnsChecksConfig {
            resolve: true,
            addresses_in: vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            zones: vec!["lab.test.".into()],
        };
        let facts = |addresses: Result<Vec<&str>, &str>, zone: Result<&str, &str>| DnsFacts {
            addresses: addresses
                .map(|a| a.iter().map(|ip| ip.parse().unwrap()).collect())
                .map_err(str::to_string),
            zone: zone.map(str::to_string).map_err(str::to_string),
        };
        let ok = facts(Ok(vec!["10.0.0.1", "2001:db8::1"]), Ok("lab.test"));
        assert_eq!(dns_check(&checks, "a.lab.test", Some(&ok)), Ok(()));
        let outside = facts(Ok(vec!["10.0.0.1", "192.0.2.1"]), Ok("lab.test"));
        assert!(dns_check(&checks, "a.lab.test", Some(&outside))
            .unwrap_err()
            .contains("192.0.2.1"));
        let nx = facts(Err("NXDOMAIN"), Ok("lab.test"));
        assert!(dns_check(&checks, "a.lab.test", Some(&nx))
            .unwrap_err()
            .contains("does not resolve"));
        // A wildcard cannot resolve: only its zone is checked.
        assert_eq!(dns_check(&checks, "*.lab.test", Some(&nx)), Ok(()));
        let foreign = facts(Ok(vec!["10.0.0.1"]), Ok("other.test"));
        assert!(dns_check(&checks, "a.other.test", Some(&foreign))
            .unwrap_err()
            .contains("other.test"));
        assert!(dns_check(&checks, "a.lab.test", None).is_err());
        assert_eq!(looked_up_name("*.lab.test"), "lab.test");
    }

    #[test]
    fn names_outside_the_role_are_refused() {
        let config = Config::load_default().unwrap();
        let roles: Vec<_> = config.roles.iter().map(|(n, r)| (n.as_str(), r)).collect();
        let ok = [
            Identifier::dns("a.b.test").unwrap(),
            Identifier::Ip("127.0.0.2".parse().unwrap()),
        ];
        let settings = PolicySettingsConfig::default();
        check(&settings, &roles, &ok, None).unwrap();
        for bad in [
            Identifier::dns("example.com").unwrap(),
            Identifier::Ip("10.0.0.1".parse().unwrap()),
        ] {
            assert_eq!(
                check(&settings, &roles, &[bad], None).unwrap_err().rule,
                "identifier_not_allowed"
            );
        }
        assert_eq!(
            check(&settings, &roles, &[], None).unwrap_err().rule,
            "no_identifiers"
        );
        // The global deny list wins over every role, wildcards included.
        let settings = PolicySettingsConfig {
            deny_dns_names: vec!["**.secret.test".to_string().try_into().unwrap()],
            deny_ip_ranges: vec!["127.0.0.5/32".parse().unwrap()],
            ..PolicySettingsConfig::default()
        };
        for bad in [
            Identifier::dns("a.secret.test").unwrap(),
            Identifier::dns("*.secret.test").unwrap(),
            Identifier::Ip("127.0.0.5".parse().unwrap()),
        ] {
            assert_eq!(
                check(&settings, &roles, &[bad], None).unwrap_err().rule,
                "identifier_denied"
            );
        }
        check(&settings, &roles, &ok, None).unwrap();
    }
}
