//! Layer 2, SAN validation: no requested name may match the global deny lists
//! (`[policy] deny_dns_names`, `deny_ip_ranges`), and every one must be allowed by one of
//! the roles that allowed the template (DNS names by pattern, IP addresses by range).

use super::{Denial, Layer};
use crate::config::{PolicySettingsConfig, RoleConfig};
use crate::model::Identifier;

/// Check every identifier against the global deny lists and the roles; the first refusal
/// decides.
pub fn check(
    settings: &PolicySettingsConfig,
    roles: &[(&str, &RoleConfig)],
    identifiers: &[Identifier],
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
    match refused(roles, identifiers).into_iter().next() {
        Some((_, reason)) => Err(Denial::new(Layer::Names, "identifier_not_allowed", reason)),
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

/// Every identifier no role allows, with the reason.
pub fn refused(
    roles: &[(&str, &RoleConfig)],
    identifiers: &[Identifier],
) -> Vec<(Identifier, String)> {
    identifiers
        .iter()
        .filter(|identifier| {
            !roles.iter().any(|(_, role)| match identifier {
                Identifier::Dns(name) => role.dns_names.iter().any(|p| p.matches(name)),
                Identifier::Ip(ip) => role.ip_ranges.iter().any(|net| net.contains(ip)),
            })
        })
        .map(|identifier| {
            (
                identifier.clone(),
                format!("`{}` is not allowed for this identity", identifier.value()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn names_outside_the_role_are_refused() {
        let config = Config::load_default().unwrap();
        let roles: Vec<_> = config.roles.iter().map(|(n, r)| (n.as_str(), r)).collect();
        let ok = [
            Identifier::dns("a.b.test").unwrap(),
            Identifier::Ip("127.0.0.2".parse().unwrap()),
        ];
        let settings = PolicySettingsConfig::default();
        check(&settings, &roles, &ok).unwrap();
        for bad in [
            Identifier::dns("example.com").unwrap(),
            Identifier::Ip("10.0.0.1".parse().unwrap()),
        ] {
            assert_eq!(
                check(&settings, &roles, &[bad]).unwrap_err().rule,
                "identifier_not_allowed"
            );
        }
        assert_eq!(
            check(&settings, &roles, &[]).unwrap_err().rule,
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
                check(&settings, &roles, &[bad]).unwrap_err().rule,
                "identifier_denied"
            );
        }
        check(&settings, &roles, &ok).unwrap();
    }
}
