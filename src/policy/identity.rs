//! Layer 1, identity RBAC: an identity may use a template when one of its roles lists it.

use super::{Denial, Layer};
use crate::config::{Config, RoleConfig};
use crate::model::Identity;

/// The identity's roles that allow `template`, or the denial.
pub fn roles_for_template<'c>(
    config: &'c Config,
    identity: &Identity,
    template: &str,
) -> Result<Vec<(&'c str, &'c RoleConfig)>, Denial> {
    let known: Vec<(&str, &RoleConfig)> = identity
        .roles
        .iter()
        .filter_map(|name| {
            config
                .roles
                .get_key_value(name)
                .map(|(n, r)| (n.as_str(), r))
        })
        .collect();
    if known.is_empty() {
        return Err(Denial::new(
            Layer::Identity,
            "no_role",
            format!(
                "identity `{}` holds no role defined in the configuration",
                identity.name
            ),
        ));
    }
    let allowed: Vec<_> = known
        .into_iter()
        .filter(|(_, role)| role.templates.iter().any(|t| t == template))
        .collect();
    if allowed.is_empty() {
        return Err(Denial::new(
            Layer::Identity,
            "template_not_allowed",
            format!(
                "no role of `{}` may use template `{template}`",
                identity.name
            ),
        ));
    }
    Ok(allowed)
}

/// Whether the identity may approve requests on `template`: it holds one of the template's
/// approver roles, or — when the template names none — a managing role.
pub fn may_approve(config: &Config, identity: &Identity, template: &str) -> bool {
    match config.templates.get(template) {
        Some(t) if !t.approvers.is_empty() => {
            identity.roles.iter().any(|r| t.approvers.contains(r))
        }
        _ => may_manage(config, identity),
    }
}

/// Whether `text` matches a glob where `*` stands for any run of characters (ASCII
/// case-insensitive): how certificate subjects map to identities.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.to_ascii_lowercase(), text.to_ascii_lowercase());
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether the identity may manage every certificate (not only its own).
pub fn may_manage(config: &Config, identity: &Identity) -> bool {
    identity
        .roles
        .iter()
        .any(|name| config.roles.get(name).is_some_and(|role| role.manage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::admin;

    #[test]
    fn globs_match_whole_texts() {
        for (pattern, text) in [
            ("SN-*", "sn-0042"),
            ("*", ""),
            ("*.devices.example", "cam1.devices.example"),
            ("a*b*c", "aXbYc"),
            ("exact", "EXACT"),
            ("a*a", "aa"),
        ] {
            assert!(glob_matches(pattern, text), "{pattern} {text}");
        }
        for (pattern, text) in [
            ("SN-*", "XSN-1"),
            ("*.devices.example", "devices.example"),
            ("a*b*c", "aXbY"),
            ("exact", "exactly"),
            ("a*a", "a"),
        ] {
            assert!(!glob_matches(pattern, text), "{pattern} {text}");
        }
    }

    #[test]
    fn role_must_exist_and_list_the_template() {
        let config = Config::load_default().unwrap();
        let mut identity = admin();
        assert_eq!(
            roles_for_template(&config, &identity, "server")
                .unwrap()
                .len(),
            1
        );
        assert!(may_manage(&config, &identity));
        identity.roles = vec!["ghost".into()];
        assert_eq!(
            roles_for_template(&config, &identity, "server")
                .unwrap_err()
                .rule,
            "no_role"
        );
        assert!(!may_manage(&config, &identity));
        let mut config = config;
        config.roles.get_mut("admin").unwrap().templates = vec!["client".into()];
        identity.roles = vec!["admin".into()];
        assert_eq!(
            roles_for_template(&config, &identity, "server")
                .unwrap_err()
                .rule,
            "template_not_allowed"
        );
    }
}
