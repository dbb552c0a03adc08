//! Layer 4, template policy: key type and size, lifetime, number of names and the
//! subject CN.

use super::{Approval, Denial, Layer, PolicyRequest};
use crate::config::{AcceptedKeyType, TemplateConfig};
use crate::model::KeyType;

/// Check the request against its template.
pub fn check(template: &TemplateConfig, request: &PolicyRequest<'_>) -> Result<Approval, Denial> {
    let deny = |rule, reason: String| Err(Denial::new(Layer::Template, rule, reason));
    let accepted = match request.key_type {
        KeyType::Rsa { .. } => AcceptedKeyType::Rsa,
        KeyType::EcdsaP256 => AcceptedKeyType::EcdsaP256,
        KeyType::EcdsaP384 => AcceptedKeyType::EcdsaP384,
        KeyType::Ed25519 => AcceptedKeyType::Ed25519,
    };
    if !template.key_types.contains(&accepted) {
        return deny(
            "key_type_not_allowed",
            format!("the template does not accept {} keys", request.key_type),
        );
    }
    if let KeyType::Rsa { bits } = request.key_type {
        if bits < template.min_rsa_bits {
            return deny(
                "rsa_key_too_small",
                format!(
                    "RSA key of {bits} bits is below the minimum of {}",
                    template.min_rsa_bits
                ),
            );
        }
        if bits > template.max_rsa_bits {
            return deny(
                "rsa_key_too_large",
                format!(
                    "RSA key of {bits} bits is above the maximum of {}",
                    template.max_rsa_bits
                ),
            );
        }
    }
    let validity_days = request
        .validity_days
        .unwrap_or(template.default_validity_days);
    if validity_days == 0 || validity_days > template.max_validity_days {
        return deny(
            "validity_not_allowed",
            format!(
                "a lifetime of {validity_days} days is outside 1..={}",
                template.max_validity_days
            ),
        );
    }
    if request.identifiers.len() > template.max_sans {
        return deny(
            "too_many_names",
            format!(
                "{} names requested, the template allows {}",
                request.identifiers.len(),
                template.max_sans
            ),
        );
    }
    let common_name = match request.common_name {
        None => None,
        Some(cn) => {
            let in_sans = request
                .identifiers
                .iter()
                .any(|id| id.value().eq_ignore_ascii_case(cn));
            if !in_sans {
                return deny(
                    "common_name_not_in_sans",
                    format!("the subject CN `{cn}` is not one of the requested names"),
                );
            }
            Some(cn.to_ascii_lowercase())
        }
    };
    if let Some(limit) = template.rate_limit_per_day {
        if request.issued_last_day >= limit {
            return deny(
                "rate_limited",
                format!(
                    "{} of {limit} certificates on template `{}` in the last 24 hours (issued or being issued)",
                    request.issued_last_day, request.template
                ),
            );
        }
    }
    let wildcard = request.identifiers.iter().find(|id| id.is_wildcard());
    let needs_approval = if template.approval_required {
        Some(format!("template `{}` requires approval", request.template))
    } else if let (true, Some(name)) = (template.approval_for_wildcards, wildcard) {
        Some(format!(
            "wildcard `{}` on template `{}` requires approval",
            name.value(),
            request.template
        ))
    } else {
        template
            .approval_above_days
            .filter(|limit| validity_days > *limit)
            .map(|limit| {
                format!(
                    "a lifetime of {validity_days} days (over {limit}) on template `{}` requires approval",
                    request.template
                )
            })
    };
    Ok(Approval {
        identifiers: request.identifiers.to_vec(),
        common_name,
        validity_days,
        needs_approval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::Identifier;
    use crate::policy::tests::admin;

    fn rule(
        key_type: KeyType,
        validity: Option<u32>,
        cn: Option<&str>,
        n: usize,
    ) -> Result<Approval, &'static str> {
        let config = Config::load_default().unwrap();
        let identity = admin();
        let ids: Vec<_> = (0..n)
            .map(|i| Identifier::dns(&format!("h{i}.test")).unwrap())
            .collect();
        let request = PolicyRequest {
            identity: &identity,
            template: "client",
            identifiers: &ids,
            common_name: cn,
            key_type,
            validity_days: validity,
            issued_last_day: 0,
            resources: &[],
            dns: None,
        };
        check(&config.templates["client"], &request).map_err(|d| d.rule)
    }

    #[test]
    fn each_template_rule_decides() {
        assert_eq!(
            rule(KeyType::EcdsaP256, None, Some("H0.test"), 1)
                .unwrap()
                .validity_days,
            30
        );
        assert_eq!(
            rule(KeyType::Rsa { bits: 1024 }, None, None, 1).unwrap_err(),
            "rsa_key_too_small"
        );
        assert_eq!(
            rule(KeyType::Rsa { bits: 8192 }, None, None, 1).unwrap_err(),
            "rsa_key_too_large"
        );
        assert!(rule(KeyType::Rsa { bits: 2048 }, Some(365), None, 1).is_ok());
        assert_eq!(
            rule(KeyType::Ed25519, Some(366), None, 1).unwrap_err(),
            "validity_not_allowed"
        );
        assert_eq!(
            rule(KeyType::Ed25519, Some(0), None, 1).unwrap_err(),
            "validity_not_allowed"
        );
        assert_eq!(
            rule(KeyType::EcdsaP384, None, None, 11).unwrap_err(),
            "too_many_names"
        );
        assert_eq!(
            rule(KeyType::EcdsaP256, None, Some("other.test"), 1).unwrap_err(),
            "common_name_not_in_sans"
        );
    }

    #[test]
    fn key_types_outside_the_template_are_refused() {
        let mut config = Config::load_default().unwrap();
        config.templates.get_mut("client").unwrap().key_types = vec![AcceptedKeyType::EcdsaP256];
        let identity = admin();
        let ids = [Identifier::dns("a.test").unwrap()];
        let request = PolicyRequest {
            identity: &identity,
            template: "client",
            identifiers: &ids,
            common_name: None,
            key_type: KeyType::Ed25519,
            validity_days: None,
            issued_last_day: 0,
            resources: &[],
            dns: None,
        };
        assert_eq!(
            check(&config.templates["client"], &request)
                .unwrap_err()
                .rule,
            "key_type_not_allowed"
        );
    }
}
