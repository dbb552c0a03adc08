//! A small admin-API client for the CLI.

use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::ApiArgs;
use crate::config::Config;

/// A configured client.
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl ApiClient {
    /// Build from arguments and the configuration.
    pub fn new(args: &ApiArgs) -> anyhow::Result<Self> {
        let config = Config::load(args.config.as_deref())?;
        let key = args
            .api_key
            .clone()
            .context("an API key is needed: pass --api-key or set RAMPART_API_KEY (printed by the first start or `rampart init`)")?;
        let base = match &args.api_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let scheme = if config.api.tls { "https" } else { "http" };
                let mut addr = config.api.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("{scheme}://{addr}")
            }
        };
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        if base.starts_with("https://") {
            let bundle = args
                .ca_bundle
                .clone()
                .unwrap_or_else(|| config.server.data_dir.join("ca-bundle.pem"));
            let pem = std::fs::read(&bundle)
                .with_context(|| format!("reading the CA bundle {}", bundle.display()))?;
            for cert in
                reqwest::Certificate::from_pem_bundle(&pem).context("parsing the CA bundle")?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(ApiClient {
            http: builder.build()?,
            base,
            key,
        })
    }

    /// Send a request; return the body of a 2xx answer, or fail with the API's message.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the rampart API at {} (is `rampart serve` running?)",
                self.base
            )
        })?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        match status {
            StatusCode::UNAUTHORIZED => bail!("the API refused the key: {message}"),
            _ => bail!("{status}: {message}"),
        }
    }

    /// GET returning JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        Ok(serde_json::from_slice(
            &self.send(Method::GET, path, None).await?,
        )?)
    }
}
