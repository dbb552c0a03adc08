//! Layer 3, resource binding: every resource a request concerns — the one it names, and
//! those its names map to (`[[resources.mappings]]`) — must be owned by one of the
//! requester's roles (the owning team); the resource's environment may restrict templates
//! or require approval. Ownership is looked up by the pipeline (registry file, CMDB) and
//! comes in as plain input; a look-up that failed denies.

use super::{Denial, Layer};
use crate::config::ResourcesConfig;
use crate::model::{Identifier, Identity};

/// What the registry says about a resource.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResourceInfo {
    /// The owning team (a role name).
    pub owner: String,
    /// Its environment (`prod`, `dev`…), if any.
    #[serde(default)]
    pub environment: Option<String>,
}

/// The outcome of looking a resource up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Registered.
    Found(ResourceInfo),
    /// Not in the registry or the CMDB.
    Unknown,
    /// The CMDB failed or did not answer in time.
    Unavailable(String),
}

/// The resources a request concerns: the one it names, then those its names map to.
pub fn concerned(
    config: &ResourcesConfig,
    named: Option<&str>,
    identifiers: &[Identifier],
) -> Vec<String> {
    let mut out: Vec<String> = named.map(str::to_string).into_iter().collect();
    for identifier in identifiers {
        if let Identifier::Dns(name) = identifier {
            for mapping in &config.mappings {
                if mapping.pattern.matches(name) && !out.contains(&mapping.resource) {
                    out.push(mapping.resource.clone());
                }
            }
        }
    }
    out
}

/// Check ownership and environment rules; `Ok` carries why approval is needed, if it is.
pub fn check(
    config: &ResourcesConfig,
    identity: &Identity,
    template: &str,
    lookups: &[(String, Lookup)],
) -> Result<Option<String>, Denial> {
    let mut needs_approval = None;
    for (resource, lookup) in lookups {
        let info = match lookup {
            Lookup::Found(info) => info,
            Lookup::Unknown => {
                return Err(Denial::new(
                    Layer::Resource,
                    "unknown_resource",
                    format!("resource `{resource}` is not registered"),
                ))
            }
            Lookup::Unavailable(reason) => {
                return Err(Denial::new(
                    Layer::Resource,
                    "resource_lookup_failed",
                    format!("the ownership of `{resource}` could not be checked: {reason}"),
                ))
            }
        };
        if !identity.roles.contains(&info.owner) {
            return Err(Denial::new(
                Layer::Resource,
                "not_resource_owner",
                format!(
                    "resource `{resource}` belongs to `{}`, which `{}` is not a member of",
                    info.owner, identity.name
                ),
            ));
        }
        let Some(env_name) = &info.environment else {
            continue;
        };
        let Some(environment) = config.environments.get(env_name) else {
            continue;
        };
        if !environment.templates.is_empty() && !environment.templates.iter().any(|t| t == template)
        {
            return Err(Denial::new(
                Layer::Resource,
                "template_not_allowed_in_environment",
                format!(
                    "template `{template}` is not allowed for `{env_name}` resource `{resource}`"
                ),
            ));
        }
        if environment.approval_required && needs_approval.is_none() {
            needs_approval = Some(format!(
                "resource `{resource}` is in `{env_name}`, which requires approval"
            ));
        }
    }
    Ok(needs_approval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EnvironmentConfig, ResourceMappingConfig};
    use crate::model::Credential;

    fn config() -> ResourcesConfig {
        let mut config = ResourcesConfig::default();
        config.mappings.push(ResourceMappingConfig {
            pattern: "**.pay.example".to_string().try_into().unwrap(),
            resource: "payments".into(),
        });
        config.environments.insert(
            "prod".into(),
            EnvironmentConfig {
                templates: vec!["server".into()],
                approval_required: true,
            },
        );
        config
    }

    fn alice() -> Identity {
        Identity {
            name: "alice".into(),
            roles: vec!["web".into()],
            credential: Credential::System,
        }
    }

    fn found(owner: &str, env: Option<&str>) -> Lookup {
        Lookup::Found(ResourceInfo {
            owner: owner.into(),
            environment: env.map(str::to_string),
        })
    }

    #[test]
    fn names_map_to_resources_and_the_named_one_comes_first() {
        let ids = [
            Identifier::dns("a.pay.example").unwrap(),
            Identifier::dns("b.pay.example").unwrap(),
            Identifier::dns("www.example").unwrap(),
        ];
        assert_eq!(
            concerned(&config(), Some("web-01"), &ids),
            ["web-01", "payments"]
        );
        assert!(concerned(&config(), None, &ids[2..]).is_empty());
    }

    #[test]
    fn owners_environments_and_failed_lookups_decide() {
        let c = config();
        let rule = |lookups: &[(String, Lookup)], template: &str| {
            check(&c, &alice(), template, lookups).map_err(|d| d.rule)
        };
        let one = |l: Lookup| vec![("r".to_string(), l)];
        assert_eq!(rule(&one(found("web", None)), "client"), Ok(None));
        assert_eq!(
            rule(&one(found("db", None)), "server"),
            Err("not_resource_owner")
        );
        assert_eq!(
            rule(&one(Lookup::Unknown), "server"),
            Err("unknown_resource")
        );
        assert_eq!(
            rule(&one(Lookup::Unavailable("timed out".into())), "server"),
            Err("resource_lookup_failed")
        );
        assert_eq!(
            rule(&one(found("web", Some("prod"))), "client"),
            Err("template_not_allowed_in_environment")
        );
        assert!(rule(&one(found("web", Some("prod"))), "server")
            .unwrap()
            .unwrap()
            .contains("requires approval"));
        // An environment without rules, and no resources at all, pass.
        assert_eq!(rule(&one(found("web", Some("dev"))), "client"), Ok(None));
        assert_eq!(rule(&[], "client"), Ok(None));
    }
}
