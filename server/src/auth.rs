//! Optional authentication: users with argon2-hashed passwords and API
//! tokens (also argon2-hashed) from the config file. When any is configured,
//! HTTP needs `Authorization: Basic` or `Bearer`, and Flight needs a
//! handshake (Basic, answered with a bearer token) or a bearer header on
//! every call.

use std::collections::HashMap;

use anyhow::Context;
use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use parking_lot::Mutex;
use quidditch_flight::Authenticator;
use serde::Deserialize;

/// Verified credentials remembered at most (argon2 is deliberately slow, and
/// clients send the same header on every request).
const MAX_REMEMBERED: usize = 10_000;

/// A user in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User name.
    pub name: String,
    /// argon2 PHC string of the password (`quidditch hash-password`).
    pub password_hash: String,
}

/// An API token in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who the token acts as.
    pub name: String,
    /// argon2 PHC string of the token (`quidditch hash-password`).
    pub token_hash: String,
}

/// The argon2 PHC string of a secret, with a random salt.
pub fn hash_secret(secret: &str) -> anyhow::Result<String> {
    let salt =
        SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes()).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
        .to_string())
}

fn verify(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &hash)
            .is_ok()
    })
}

/// The credentials of a node.
#[derive(Debug)]
pub struct Credentials {
    users: Vec<UserConfig>,
    tokens: Vec<TokenConfig>,
    /// Authorization header values already verified, and their user.
    verified: Mutex<HashMap<String, String>>,
    /// Bearer tokens issued by Flight handshakes, and their user.
    sessions: Mutex<HashMap<String, String>>,
}

impl Credentials {
    /// Credentials from the config file, or `None` when it sets none.
    pub fn new(users: Vec<UserConfig>, tokens: Vec<TokenConfig>) -> anyhow::Result<Option<Credentials>> {
        if users.is_empty() && tokens.is_empty() {
            return Ok(None);
        }
        for u in &users {
            PasswordHash::new(&u.password_hash)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("password_hash of user [{}] is not an argon2 PHC string", u.name))?;
        }
        for t in &tokens {
            PasswordHash::new(&t.token_hash)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("token_hash of token [{}] is not an argon2 PHC string", t.name))?;
        }
        Ok(Some(Credentials {
            users,
            tokens,
            verified: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
        }))
    }

    fn basic(&self, encoded: &str) -> Result<String, String> {
        // Some clients (Go's Flight client among them) leave the padding out.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let decoded = lenient
            .decode(encoded.trim())
            .map_err(|_| "malformed Basic credentials".to_string())?;
        let text = String::from_utf8(decoded).map_err(|_| "malformed Basic credentials".to_string())?;
        let (name, password) = text
            .split_once(':')
            .ok_or_else(|| "malformed Basic credentials".to_string())?;
        self.users
            .iter()
            .find(|u| u.name == name && verify(password, &u.password_hash))
            .map(|u| u.name.clone())
            .ok_or_else(|| format!("unable to authenticate user [{name}]"))
    }

    fn bearer(&self, token: &str) -> Result<String, String> {
        if let Some(user) = self.sessions.lock().get(token) {
            return Ok(user.clone());
        }
        self.tokens
            .iter()
            .find(|t| verify(token, &t.token_hash))
            .map(|t| t.name.clone())
            .ok_or_else(|| "unable to authenticate with the provided token".to_string())
    }
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

impl Authenticator for Credentials {
    fn authenticate(&self, authorization: Option<&str>) -> Result<String, String> {
        let header = authorization.ok_or_else(|| "missing authentication credentials".to_string())?;
        if let Some(user) = self.verified.lock().get(header) {
            return Ok(user.clone());
        }
        let user = if let Some(encoded) = strip_scheme(header, "Basic") {
            self.basic(encoded)?
        } else if let Some(token) = strip_scheme(header, "Bearer") {
            self.bearer(token.trim())?
        } else {
            return Err("unsupported authorization scheme: use Basic or Bearer".to_string());
        };
        let mut verified = self.verified.lock();
        if verified.len() >= MAX_REMEMBERED {
            verified.clear();
        }
        verified.insert(header.to_string(), user.clone());
        Ok(user)
    }

    fn remembered(&self, authorization: &str) -> Option<String> {
        self.verified.lock().get(authorization).cloned()
    }

    fn issue_token(&self, user: &str) -> String {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut sessions = self.sessions.lock();
        if sessions.len() >= MAX_REMEMBERED {
            sessions.clear();
        }
        sessions.insert(token.clone(), user.to_string());
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn users_tokens_and_sessions() -> anyhow::Result<()> {
        let creds = Credentials::new(
            vec![UserConfig {
                name: "alice".into(),
                password_hash: hash_secret("s3cret")?,
            }],
            vec![TokenConfig {
                name: "bot".into(),
                token_hash: hash_secret("tok-123")?,
            }],
        )?
        .ok_or_else(|| anyhow::anyhow!("credentials expected"))?;
        assert_eq!(
            creds.authenticate(Some(&basic("alice", "s3cret"))),
            Ok("alice".into())
        );
        assert!(creds.authenticate(Some(&basic("alice", "wrong"))).is_err());
        assert!(creds.authenticate(Some(&basic("bob", "s3cret"))).is_err());
        assert!(creds.authenticate(None).is_err());
        assert!(creds.authenticate(Some("Digest abc")).is_err());
        assert_eq!(creds.authenticate(Some("Bearer tok-123")), Ok("bot".into()));
        assert!(creds.authenticate(Some("Bearer tok-124")).is_err());
        let session = creds.issue_token("alice");
        assert_eq!(
            creds.authenticate(Some(&format!("Bearer {session}"))),
            Ok("alice".into())
        );
        assert!(Credentials::new(vec![], vec![])?.is_none());
        let bad = Credentials::new(
            vec![UserConfig {
                name: "eve".into(),
                password_hash: "plaintext".into(),
            }],
            vec![],
        );
        assert!(bad.is_err_and(|e| format!("{e:#}").contains("user [eve]")));
        Ok(())
    }
}
