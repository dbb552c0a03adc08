//! Ownership look-ups for policy layer 3: the TOML registry file and the HTTP JSON CMDB,
//! with a TTL cache. Found and not-found answers are cached for
//! `resources.cache_ttl_seconds`; failures are not (the next request asks again) and deny.
//!
//! Imports `config` and `policy::resources` (the answer types).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::ResourcesConfig;
use crate::policy::resources::{Lookup, ResourceInfo};

/// Resource ownership with a cache.
#[derive(Debug, Default)]
pub struct Directory {
    cache: Mutex<HashMap<String, (Instant, Lookup)>>,
    http: std::sync::OnceLock<reqwest::Client>,
}

impl Directory {
    /// Forget every cached answer (the configuration was reloaded).
    pub fn clear(&self) {
        self.cache.lock().expect("cache lock").clear();
    }

    /// Look every resource up.
    pub async fn lookup_all(
        &self,
        config: &ResourcesConfig,
        resources: &[String],
    ) -> Vec<(String, Lookup)> {
        let mut out = Vec::with_capacity(resources.len());
        for resource in resources {
            out.push((resource.clone(), self.lookup(config, resource).await));
        }
        out
    }

    async fn lookup(&self, config: &ResourcesConfig, resource: &str) -> Lookup {
        let ttl = Duration::from_secs(config.cache_ttl_seconds);
        if let Some((at, answer)) = self.cache.lock().expect("cache lock").get(resource) {
            if at.elapsed() < ttl {
                return answer.clone();
            }
        }
        let answer = self.ask(config, resource).await;
        if !matches!(answer, Lookup::Unavailable(_)) {
            self.cache
                .lock()
                .expect("cache lock")
                .insert(resource.to_string(), (Instant::now(), answer.clone()));
        }
        answer
    }

    async fn ask(&self, config: &ResourcesConfig, resource: &str) -> Lookup {
        if let Some(path) = &config.registry_file {
            match read_registry(path, resource) {
                Ok(Some(info)) => return Lookup::Found(info),
                Ok(None) => {}
                Err(reason) => return Lookup::Unavailable(reason),
            }
        }
        let Some(url) = &config.cmdb_url else {
            return Lookup::Unknown;
        };
        let http = self.http.get_or_init(|| {
            reqwest::Client::builder()
                .use_rustls_tls()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default()
        });
        let target = format!("{}/{}", url.trim_end_matches('/'), percent_encode(resource));
        let response = http
            .get(&target)
            .timeout(Duration::from_millis(config.cmdb_timeout_ms))
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                return Lookup::Unavailable(format!(
                    "the CMDB did not answer within {} ms",
                    config.cmdb_timeout_ms
                ))
            }
            Err(_) => return Lookup::Unavailable("the CMDB cannot be reached".into()),
        };
        match response.status().as_u16() {
            200 => match response.json::<ResourceInfo>().await {
                Ok(info) => Lookup::Found(info),
                Err(_) => Lookup::Unavailable("the CMDB answered something unreadable".into()),
            },
            404 => Lookup::Unknown,
            status => Lookup::Unavailable(format!("the CMDB answered HTTP {status}")),
        }
    }
}

/// The registry file's entry for `resource` (`[<resource>] owner = …, environment = …`).
fn read_registry(path: &std::path::Path, resource: &str) -> Result<Option<ResourceInfo>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("registry {}: {e}", path.display()))?;
    let mut table: HashMap<String, ResourceInfo> =
        toml::from_str(&text).map_err(|e| format!("registry {}: {e}", path.display()))?;
    Ok(table.remove(resource))
}

/// Path-segment encoding of a resource name (RFC 3986 unreserved kept).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_entries_are_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resources.toml");
        std::fs::write(
            &path,
            "[web-01]\nowner = \"web\"\nenvironment = \"prod\"\n[db]\nowner = \"dba\"\n",
        )
        .unwrap();
        let web = read_registry(&path, "web-01").unwrap().unwrap();
        assert_eq!(web.owner, "web");
        assert_eq!(web.environment.as_deref(), Some("prod"));
        assert_eq!(
            read_registry(&path, "db").unwrap().unwrap().environment,
            None
        );
        assert_eq!(read_registry(&path, "nope").unwrap(), None);
        std::fs::write(&path, "[broken").unwrap();
        assert!(read_registry(&path, "db").is_err());
        assert_eq!(percent_encode("ns/a b"), "ns%2Fa%20b");
    }
}
