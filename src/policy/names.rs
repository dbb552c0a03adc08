//! Layer 2, SAN validation: every requested name must be allowed by one of the roles that
//! allowed the template (DNS names by pattern, IP addresses by range). DNS look-ups (CAA,
//! existence checks) are not done yet.

use super::{Denial, Layer};
use crate::config::RoleConfig;
use crate::model::Identifier;

/// Check every identifier against the roles; the first refusal decides.
pub fn check(roles: &[(&str, &RoleConfig)], identifiers: &[Identifier]) -> Result<(), Denial> {
    if identifiers.is_empty() {
        return Err(Denial::new(
            Layer::Names,
            "no_identifiers",
            "the request names no DNS name or IP address (put them in the CSR's subjectAltName)",
        ));
    }
    match refused(roles, identifiers).into_iter().next() {
        Some((_, reason)) => Err(Denial::new(Layer::Names, "identifier_not_allowed", reason)),
        None => Ok(()),
    }
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
        check(&roles, &ok).unwrap();
        for bad in [
            Identifier::dns("example.com").unwrap(),
            Identifier::Ip("10.0.0.1".parse().unwrap()),
        ] {
            assert_eq!(
                check(&roles, &[bad]).unwrap_err().rule,
                "identifier_not_allowed"
            );
        }
        assert_eq!(check(&roles, &[]).unwrap_err().rule, "no_identifiers");
    }
}
