//! Policy: pure decisions on an enrollment request, layer by layer, each in its own
//! module. A decision carries the layer and rule that decided and a trace of every
//! layer's verdict, so the audit log can say exactly why.
//!
//! Layers, in order (DESIGN.md): 1 identity RBAC ([`identity`]) → 2 SAN validation
//! ([`names`]) → 3 resource binding ([`resources`]) → 4 template policy ([`template`]).
//!
//! Imports `config` and `model` only: no store, no CA, no I/O. What a decision needs
//! (time, look-ups) comes in as plain inputs.

pub mod identity;
pub mod names;
pub mod resources;
pub mod template;

use serde::Serialize;

use crate::config::{Config, TemplateConfig};
use crate::model::{Identifier, Identity, KeyType};

/// A policy layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// The request itself could not be read (bad CSR, bad names).
    Input,
    /// 1: who may use which template.
    Identity,
    /// 2: which names the identity may get.
    Names,
    /// 3: whose resources the certificate is for.
    Resource,
    /// 4: what the template allows.
    Template,
}

impl Layer {
    /// Name used in audit records, metrics and API errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Input => "input",
            Layer::Identity => "identity",
            Layer::Names => "names",
            Layer::Resource => "resource",
            Layer::Template => "template",
        }
    }
}

/// Why a request was refused: the layer, a stable rule id and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    /// Deciding layer.
    pub layer: Layer,
    /// Stable machine-readable rule id (`unknown_template`, `rsa_key_too_small`, …).
    pub rule: &'static str,
    /// Explanation.
    pub reason: String,
}

impl Denial {
    /// A denial.
    pub fn new(layer: Layer, rule: &'static str, reason: impl Into<String>) -> Self {
        Denial {
            layer,
            rule,
            reason: reason.into(),
        }
    }
}

/// One layer's verdict, kept in the trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Layer.
    pub layer: Layer,
    /// `passed` or `denied`.
    pub verdict: &'static str,
    /// What it checked or why it refused.
    pub detail: String,
}

/// What an approval fixes for issuance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Names to put in the certificate.
    pub identifiers: Vec<Identifier>,
    /// Subject CN (one of the identifiers) or none.
    pub common_name: Option<String>,
    /// Lifetime in days.
    pub validity_days: u32,
    /// Why a person must approve first, when one must.
    pub needs_approval: Option<String>,
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Issue as described.
    Approved(Approval),
    /// Refuse.
    Denied(Denial),
}

/// Everything a decision looks at, already parsed and authenticated.
#[derive(Debug, Clone)]
pub struct PolicyRequest<'a> {
    /// The requester.
    pub identity: &'a Identity,
    /// Template name.
    pub template: &'a str,
    /// Names asked for.
    pub identifiers: &'a [Identifier],
    /// Subject CN from the CSR.
    pub common_name: Option<&'a str>,
    /// CSR key type.
    pub key_type: KeyType,
    /// Lifetime asked for, if any.
    pub validity_days: Option<u32>,
    /// Certificates this identity got on this template in the last 24 hours, and those of
    /// its approved requests being issued (counted by the pipeline when the template has a
    /// rate limit).
    pub issued_last_day: u32,
    /// The resources the request concerns ([`resources::concerned`]) as the pipeline
    /// looked them up.
    pub resources: &'a [(String, resources::Lookup)],
    /// DNS facts of the requested names, when a role with DNS checks is involved
    /// ([`needs_dns`]); `None` skips DNS checks.
    pub dns: Option<&'a names::DnsFactsMap>,
}

/// Whether deciding on this request needs DNS facts: a role that may use the template has
/// DNS checks.
pub fn needs_dns(config: &Config, identity: &Identity, template: &str) -> bool {
    identity::roles_for_template(config, identity, template)
        .is_ok_and(|roles| names::needs_dns(&roles))
}

/// A decision with its trace.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The decision.
    pub decision: Decision,
    /// Each layer's verdict, in order.
    pub trace: Vec<Step>,
}

/// Run the layers in order; the first denial decides.
pub fn evaluate(config: &Config, request: &PolicyRequest<'_>) -> Evaluation {
    let mut trace = Vec::new();
    let outcome = run_layers(config, request, &mut trace);
    let decision = match outcome {
        Ok(approval) => Decision::Approved(approval),
        Err(denial) => {
            trace.push(Step {
                layer: denial.layer,
                verdict: "denied",
                detail: denial.reason.clone(),
            });
            Decision::Denied(denial)
        }
    };
    Evaluation { decision, trace }
}

fn run_layers(
    config: &Config,
    request: &PolicyRequest<'_>,
    trace: &mut Vec<Step>,
) -> Result<Approval, Denial> {
    let template: &TemplateConfig = config.templates.get(request.template).ok_or_else(|| {
        Denial::new(
            Layer::Identity,
            "unknown_template",
            format!("there is no template `{}`", request.template),
        )
    })?;
    let roles = identity::roles_for_template(config, request.identity, request.template)?;
    trace.push(Step {
        layer: Layer::Identity,
        verdict: "passed",
        detail: format!(
            "roles {:?} may use template `{}`",
            roles.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            request.template
        ),
    });
    names::check(&config.policy, &roles, request.identifiers, request.dns)?;
    trace.push(Step {
        layer: Layer::Names,
        verdict: "passed",
        detail: format!("{} name(s) allowed", request.identifiers.len()),
    });
    let resource_approval = resources::check(
        &config.resources,
        request.identity,
        request.template,
        request.resources,
    )?;
    trace.push(Step {
        layer: Layer::Resource,
        verdict: "passed",
        detail: if request.resources.is_empty() {
            "no resource named or mapped".into()
        } else {
            let names: Vec<&str> = request.resources.iter().map(|(r, _)| r.as_str()).collect();
            format!("owned by the requester's team: {}", names.join(", "))
        },
    });
    let mut approval = template::check(template, request)?;
    if approval.needs_approval.is_none() {
        approval.needs_approval = resource_approval;
    }
    let mut detail = format!("{} key, {} days", request.key_type, approval.validity_days);
    if let Some(limit) = template.rate_limit_per_day {
        detail.push_str(&format!(
            ", {} of {limit} today",
            request.issued_last_day + 1
        ));
    }
    if let Some(reason) = &approval.needs_approval {
        detail.push_str(&format!("; {reason}"));
    }
    trace.push(Step {
        layer: Layer::Template,
        verdict: if approval.needs_approval.is_some() {
            "needs_approval"
        } else {
            "passed"
        },
        detail,
    });
    Ok(approval)
}

/// Why [`precheck_names`] refused: the layer that decided, and every refused identifier
/// with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrecheckDenial {
    /// The deciding layer.
    pub layer: Layer,
    /// The refused identifiers, each with its reason.
    pub refused: Vec<(Identifier, String)>,
}

/// The identity and names layers alone, per identifier, for protocols that ask before
/// the CSR exists (ACME newOrder): every refused identifier with its reason.
pub fn precheck_names(
    config: &Config,
    identity: &Identity,
    template: &str,
    identifiers: &[Identifier],
) -> Result<(), PrecheckDenial> {
    let all_refused = |layer: Layer, reason: String| PrecheckDenial {
        layer,
        refused: identifiers
            .iter()
            .map(|i| (i.clone(), reason.clone()))
            .collect(),
    };
    if !config.templates.contains_key(template) {
        return Err(all_refused(
            Layer::Template,
            format!("there is no template `{template}`"),
        ));
    }
    let roles = identity::roles_for_template(config, identity, template)
        .map_err(|d| all_refused(Layer::Identity, d.reason))?;
    let mut refused = names::globally_denied(&config.policy, identifiers);
    let by_roles: Vec<_> = names::refused(&roles, identifiers, None)
        .into_iter()
        .filter(|r| !refused.iter().any(|(denied, _)| *denied == r.identifier))
        .map(|r| (r.identifier, r.reason))
        .collect();
    refused.extend(by_roles);
    if refused.is_empty() {
        Ok(())
    } else {
        Err(PrecheckDenial {
            layer: Layer::Names,
            refused,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Credential;

    pub(crate) fn admin() -> Identity {
        Identity {
            name: "admin".into(),
            roles: vec!["admin".into()],
            credential: Credential::ApiKey { key_id: "k".into() },
        }
    }

    #[test]
    fn demo_policy_approves_a_test_name_and_traces_every_layer() {
        let config = Config::load_default().unwrap();
        let ids = [Identifier::dns("www.example").unwrap()];
        let identity = admin();
        let request = PolicyRequest {
            identity: &identity,
            template: "server",
            identifiers: &ids,
            common_name: Some("www.example"),
            key_type: KeyType::EcdsaP256,
            validity_days: None,
            issued_last_day: 0,
            resources: &[],
            dns: None,
        };
        let evaluation = evaluate(&config, &request);
        assert_eq!(
            evaluation.decision,
            Decision::Approved(Approval {
                identifiers: ids.to_vec(),
                common_name: Some("www.example".into()),
                validity_days: 90,
                needs_approval: None,
            })
        );
        let layers: Vec<_> = evaluation.trace.iter().map(|s| s.layer).collect();
        assert_eq!(
            layers,
            [
                Layer::Identity,
                Layer::Names,
                Layer::Resource,
                Layer::Template
            ]
        );
    }

    /// config/policy.example.toml loads and decides as its header says.
    #[test]
    fn the_enterprise_example_policy_decides_as_documented() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join("policy.example.toml");
        let config = Config::load(Some(&path)).unwrap();
        let decide = |role: &str, template: &str, name: &str| {
            let identity = Identity {
                name: "someone".into(),
                roles: vec![role.into()],
                credential: crate::model::Credential::System,
            };
            let ids = [Identifier::dns(name).unwrap()];
            let request = PolicyRequest {
                identity: &identity,
                template,
                identifiers: &ids,
                common_name: None,
                key_type: KeyType::EcdsaP256,
                validity_days: None,
                issued_last_day: 0,
                resources: &[],
                dns: None,
            };
            match evaluate(&config, &request).decision {
                Decision::Approved(a) if a.needs_approval.is_some() => "pending",
                Decision::Approved(_) => "approved",
                Decision::Denied(d) => d.rule,
            }
        };
        assert_eq!(
            decide("web-devs", "tls-server", "app.dev.example.com"),
            "approved"
        );
        assert_eq!(
            decide("web-devs", "tls-server", "a.b.dev.example.com"),
            "identifier_not_allowed"
        );
        assert_eq!(
            decide("web-devs", "tls-server-prod", "app.dev.example.com"),
            "template_not_allowed"
        );
        assert_eq!(
            decide("platform", "tls-server-prod", "a.b.prod.example.com"),
            "pending"
        );
        assert_eq!(
            decide("devices", "device-identity", "d1.devices.example.com"),
            "approved"
        );
        assert_eq!(
            decide("pki-admins", "tls-server", "x.corp.example.com"),
            "identifier_denied"
        );
    }

    #[test]
    fn unknown_template_is_denied_by_the_identity_layer() {
        let config = Config::load_default().unwrap();
        let identity = admin();
        let ids = [Identifier::dns("a.test").unwrap()];
        let request = PolicyRequest {
            identity: &identity,
            template: "nope",
            identifiers: &ids,
            common_name: None,
            key_type: KeyType::EcdsaP256,
            validity_days: None,
            issued_last_day: 0,
            resources: &[],
            dns: None,
        };
        let Decision::Denied(denial) = evaluate(&config, &request).decision else {
            panic!("approved")
        };
        assert_eq!(
            (denial.layer, denial.rule),
            (Layer::Identity, "unknown_template")
        );
    }
}
