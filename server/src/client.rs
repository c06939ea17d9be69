//! Credentials for the command-line clients (`quidditch sql --url`,
//! `quidditch load`) talking to a node that requires them.

use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

/// How a command authenticates to the node.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientAuth {
    /// `USER:PASSWORD` for Basic authentication.
    #[arg(long, env = "QUIDDITCH_USER")]
    pub user: Option<String>,
    /// An API token for Bearer authentication.
    #[arg(long, env = "QUIDDITCH_TOKEN")]
    pub token: Option<String>,
}

impl ClientAuth {
    /// An HTTP client that sends the credentials with every request.
    pub fn http_client(&self, timeout: Duration) -> anyhow::Result<reqwest::blocking::Client> {
        let mut headers = HeaderMap::new();
        let value = match (&self.user, &self.token) {
            (Some(_), Some(_)) => anyhow::bail!("give --user or --token, not both"),
            (Some(user), None) => {
                anyhow::ensure!(user.contains(':'), "--user takes USER:PASSWORD");
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(user)
                ))
            }
            (None, Some(token)) => Some(format!("Bearer {token}")),
            (None, None) => None,
        };
        if let Some(v) = value {
            let mut v = HeaderValue::from_str(&v)?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        Ok(reqwest::blocking::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .build()?)
    }
}
