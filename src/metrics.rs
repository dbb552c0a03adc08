//! Prometheus metrics: HTTP requests per listener, policy decisions and issuance latency
//! per protocol. One registry per running daemon, rendered at `/metrics`.
//!
//! A leaf module: callers pass plain strings.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    listener: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    protocol: String,
    outcome: String,
    layer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LifecycleLabels {
    task: String,
    target: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DiscoveryLabels {
    source: String,
    external: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The daemon's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    lifecycle: Family<LifecycleLabels, Counter>,
    issuance_seconds: Family<ProtocolLabels, Histogram, fn() -> Histogram>,
    discovered: Family<DiscoveryLabels, Counter>,
    connections_refused: Family<RefusalLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh, registered metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rampart");
        let requests = Family::<RequestLabels, Counter>::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        let lifecycle = Family::<LifecycleLabels, Counter>::default();
        let connections_refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed before their first request, by listener and reason \
             (proxy_header: a trusted proxy's PROXY header missing, malformed or late; \
             tls_handshake: the TLS handshake failed or timed out; a connection closed by its \
             client before a handshake ends, such as a TCP health check, is not counted)",
            connections_refused.clone(),
        );
        registry.register(
            "lifecycle_operations",
            "Background lifecycle work (webhook deliveries, renewals, deliveries to targets, \
             protocol state removed after its retention), by task, target and outcome",
            lifecycle.clone(),
        );
        let issuance_seconds =
            Family::<ProtocolLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "http_requests",
            "HTTP requests answered, by listener, method and status",
            requests.clone(),
        );
        registry.register(
            "policy_decisions",
            "Policy decisions, by protocol, outcome and deciding layer",
            decisions.clone(),
        );
        registry.register(
            "issuance_duration_seconds",
            "Time from submission to a recorded certificate, by protocol",
            issuance_seconds.clone(),
        );
        let discovered = Family::<DiscoveryLabels, Counter>::default();
        registry.register(
            "discovered_certificates",
            "Certificates newly found by discovery, by source (tls, file) and whether rampart \
             did not issue them",
            discovered.clone(),
        );
        Metrics {
            registry,
            requests,
            decisions,
            lifecycle,
            issuance_seconds,
            discovered,
            connections_refused,
        }
    }

    /// Count a connection closed before its first request.
    pub fn connection_refused(&self, listener: &str, reason: &str) {
        let labels = RefusalLabels {
            listener: listener.into(),
            reason: reason.into(),
        };
        self.connections_refused.get_or_create(&labels).inc();
    }

    /// Count a certificate discovery found for the first time.
    pub fn discovered(&self, source: &str, external: bool) {
        let labels = DiscoveryLabels {
            source: source.into(),
            external: external.to_string(),
        };
        self.discovered.get_or_create(&labels).inc();
    }

    /// Count an answered HTTP request.
    pub fn http_request(&self, listener: &str, method: &str, status: u16) {
        let labels = RequestLabels {
            listener: listener.into(),
            method: method.into(),
            status: status.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// Count a policy decision (`layer` is empty for approvals).
    pub fn decision(&self, protocol: &str, outcome: &str, layer: &str) {
        let labels = DecisionLabels {
            protocol: protocol.into(),
            outcome: outcome.into(),
            layer: layer.into(),
        };
        self.decisions.get_or_create(&labels).inc();
    }

    /// Count one webhook delivery attempt's outcome (`delivered`, `failed`, `dead_lettered`).
    pub fn webhook_delivery(&self, endpoint: &str, outcome: &str) {
        self.lifecycle_operation("webhook", endpoint, outcome);
    }

    /// Count one background lifecycle operation (`task` = webhook, renewal, delivery…).
    pub fn lifecycle_operation(&self, task: &str, target: &str, outcome: &str) {
        self.lifecycle_operations(task, target, outcome, 1);
    }

    /// Count `count` background lifecycle operations of one kind (`retention` counts the
    /// entries a pass removed, by kind).
    pub fn lifecycle_operations(&self, task: &str, target: &str, outcome: &str, count: u64) {
        self.lifecycle
            .get_or_create(&LifecycleLabels {
                task: task.into(),
                target: target.into(),
                outcome: outcome.into(),
            })
            .inc_by(count);
    }

    /// Record one issuance's latency.
    pub fn issuance(&self, protocol: &str, seconds: f64) {
        self.issuance_seconds
            .get_or_create(&ProtocolLabels {
                protocol: protocol.into(),
            })
            .observe(seconds);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let metrics = Metrics::new();
        metrics.http_request("api", "POST", 201);
        metrics.decision("api", "denied", "template");
        metrics.issuance("api", 0.004);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"rampart_http_requests_total{listener="api",method="POST",status="201"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"rampart_policy_decisions_total{protocol="api",outcome="denied",layer="template"} 1"#
        ));
        assert!(text.contains(r#"rampart_issuance_duration_seconds_count{protocol="api"} 1"#));
    }
}
