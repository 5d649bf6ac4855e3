//! JWT bearer tokens from an identity provider, mapped to the roles API
//! keys hold.
//!
//! The operator names the provider's public keys (a JWKS file), the
//! issuer, the audience and the algorithms to accept. A token is accepted
//! when its header's algorithm is one of those (and the key's own, when
//! the key names one: a key for ES256 never checks an HS256 token), its
//! signature verifies with the key its `kid` names (or the only key), and
//! its `iss`, `aud`, `exp` (with 30 s of leeway) and `sub` are right. Its
//! roles are the `read`, `write` and `admin` in its roles claim (`roles`
//! by default; other values are ignored, as providers put more there); it
//! acts as `jwt:<sub>` in the audit log and the rate limit. Such a caller
//! is never limited to stream prefixes. The JWKS file is read again when
//! it changes, as the keys file is.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::Role;
use super::keys::Key;
use super::watched::Watched;

/// Seconds a token's `exp` and `nbf` may be off by (clock skew).
const LEEWAY_SECONDS: u64 = 30;

/// What the operator configures for JWT bearer tokens.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub jwks_file: PathBuf,
    pub issuer: String,
    pub audience: String,
    pub algorithms: Vec<String>,
    pub roles_claim: String,
}

/// Verifies tokens against the keys of a JWKS file, read again when it
/// changes (a provider's key rotation needs no restart).
pub struct JwtVerifier {
    keys: Watched<Arc<[VerifyingKey]>>,
    algorithms: Vec<Algorithm>,
    issuer: String,
    audience: String,
    roles_claim: String,
}

struct VerifyingKey {
    kid: Option<String>,
    /// The algorithm the key declares (`alg`), if it does.
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("jwks", &self.keys.path())
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl JwtVerifier {
    /// Reads the JWKS file; every key in it must be usable, and at least
    /// one algorithm named.
    pub fn load(settings: &JwtSettings) -> anyhow::Result<Self> {
        let algorithms = settings
            .algorithms
            .iter()
            .map(|name| {
                Algorithm::from_str(name)
                    .map_err(|_| anyhow::anyhow!("--jwt-algorithm {name}: not a JWS algorithm"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if algorithms.is_empty() {
            anyhow::bail!("--jwt-jwks needs --jwt-algorithm: the algorithms to accept");
        }
        let keys = read_jwks(&settings.jwks_file)?;
        Ok(Self {
            keys: Watched::new(settings.jwks_file.clone(), reload, keys.into()),
            algorithms,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            roles_claim: settings.roles_claim.clone(),
        })
    }

    /// The caller a token names, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Key, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(format!("the algorithm {:?} is not accepted", header.alg));
        }
        let keys = self.keys.current();
        let key = key_for(&keys, header.kid.as_deref())?;
        if key.algorithm.is_some_and(|alg| alg != header.alg) {
            return Err(format!(
                "the key {:?} is not for the algorithm {:?}",
                key.kid.as_deref().unwrap_or(""),
                header.alg
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = LEEWAY_SECONDS;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.required_spec_claims = ["exp", "iss", "aud", "sub"]
            .into_iter()
            .map(String::from)
            .collect::<HashSet<_>>();
        let claims = jsonwebtoken::decode::<Value>(token, &key.key, &validation)
            .map_err(|e| format!("the JWT is not valid: {e}"))?
            .claims;
        let subject = claims["sub"]
            .as_str()
            .ok_or("the JWT's sub is not a string")?;
        Ok(Key::from_token(
            format!("jwt:{subject}"),
            roles(&claims[self.roles_claim.as_str()]),
        ))
    }
}

/// The key of `keys` a token's `kid` names, or the only one.
fn key_for<'k>(keys: &'k [VerifyingKey], kid: Option<&str>) -> Result<&'k VerifyingKey, String> {
    match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .ok_or_else(|| format!("no key {kid:?} in the JWKS")),
        None => match keys {
            [only] => Ok(only),
            _ => Err("the JWT names no key (kid) and the JWKS has several".into()),
        },
    }
}

/// The JWKS file's keys after it changed; none at all (every token
/// refused, and said in the log) when it cannot be used, as for the keys
/// file: guessing which keys still count is not safer.
fn reload(path: &Path) -> Arc<[VerifyingKey]> {
    match read_jwks(path) {
        Ok(keys) => keys.into(),
        Err(e) => {
            tracing::error!(file = %path.display(), error = format!("{e:#}"), "the JWKS file is unusable: every JWT is refused until it is fixed");
            Arc::from(Vec::new())
        }
    }
}

/// The roles a claim's value grants: the known names in a list (or a
/// space-separated string, as `scope` claims are), nothing else.
fn roles(claim: &Value) -> Vec<Role> {
    let names: Vec<&str> = match claim {
        Value::Array(values) => values.iter().filter_map(Value::as_str).collect(),
        Value::String(text) => text.split_whitespace().collect(),
        _ => Vec::new(),
    };
    let mut roles: Vec<Role> = names
        .into_iter()
        .filter_map(|name| match name {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        })
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

fn read_jwks(path: &Path) -> anyhow::Result<Vec<VerifyingKey>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the JWKS file {}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a JWKS (a JSON object with `keys`)",
            path.display()
        )
    })?;
    if set.keys.is_empty() {
        anyhow::bail!("the JWKS file {} holds no key", path.display());
    }
    set.keys
        .iter()
        .map(|jwk| {
            let kid = jwk.common.key_id.clone();
            let name = kid.as_deref().unwrap_or("without a kid");
            let key = DecodingKey::from_jwk(jwk)
                .with_context(|| format!("the key {name} of {} is not usable", path.display()))?;
            let algorithm = jwk
                .common
                .key_algorithm
                .map(|alg| Algorithm::from_str(&alg.to_string()))
                .transpose()
                .map_err(|_| {
                    anyhow::anyhow!(
                        "the key {name} of {} is for an algorithm that does not sign",
                        path.display()
                    )
                })?;
            Ok(VerifyingKey {
                kid,
                algorithm,
                key,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"a shared secret of the identity provider, 32+ bytes";

    fn settings(dir: &Path, algorithms: &[&str]) -> JwtSettings {
        use base64::Engine;
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
        let jwks = json!({"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": k}]});
        let path = dir.join("jwks.json");
        std::fs::write(&path, jwks.to_string()).unwrap();
        JwtSettings {
            jwks_file: path,
            issuer: "https://id.example".into(),
            audience: "annals".into(),
            algorithms: algorithms.iter().map(|a| a.to_string()).collect(),
            roles_claim: "roles".into(),
        }
    }

    fn token(alg: Algorithm, kid: Option<&str>, claims: Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(String::from);
        encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn claims(extra: Value) -> Value {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let mut claims = json!({
            "iss": "https://id.example", "aud": "annals", "sub": "ada",
            "exp": exp, "roles": ["read", "admin", "billing"]
        });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    }

    #[test]
    fn a_right_token_names_its_subject_and_known_roles() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = JwtVerifier::load(&settings(dir.path(), &["HS256"])).unwrap();
        let key = verifier
            .verify(&token(Algorithm::HS256, Some("k1"), claims(json!({}))))
            .unwrap();
        assert_eq!(key.name, "jwt:ada");
        assert_eq!(key.roles, [Role::Read, Role::Admin]);
        assert!(key.streams.is_empty() && !key.is_revoked());
        // No kid, one key: that key.
        assert!(
            verifier
                .verify(&token(Algorithm::HS256, None, claims(json!({}))))
                .is_ok()
        );
    }

    #[test]
    fn a_wrong_issuer_audience_expiry_key_or_algorithm_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = JwtVerifier::load(&settings(dir.path(), &["HS256"])).unwrap();
        let refused = |alg, kid, extra| {
            verifier
                .verify(&token(alg, kid, claims(extra)))
                .unwrap_err()
        };
        assert!(
            refused(Algorithm::HS256, Some("k1"), json!({"iss": "https://evil"}))
                .contains("not valid")
        );
        assert!(
            refused(Algorithm::HS256, Some("k1"), json!({"aud": "other"})).contains("not valid")
        );
        assert!(refused(Algorithm::HS256, Some("k1"), json!({"exp": 1000})).contains("not valid"));
        assert!(refused(Algorithm::HS256, Some("k2"), json!({})).contains("no key"));
        // Accepted by the operator's list but not the key's own algorithm.
        let both = JwtVerifier::load(&settings(dir.path(), &["HS256", "HS384"])).unwrap();
        assert!(
            both.verify(&token(Algorithm::HS384, Some("k1"), claims(json!({}))))
                .unwrap_err()
                .contains("not for the algorithm")
        );
        // Not in the operator's list at all.
        assert!(refused(Algorithm::HS512, Some("k1"), json!({})).contains("not accepted"));
        // No subject.
        let mut no_sub = claims(json!({}));
        no_sub.as_object_mut().unwrap().remove("sub");
        assert!(
            verifier
                .verify(&token(Algorithm::HS256, Some("k1"), no_sub))
                .is_err()
        );
        // A signature made with another secret.
        let forged = encode(
            &Header {
                kid: Some("k1".into()),
                ..Header::new(Algorithm::HS256)
            },
            &claims(json!({})),
            &EncodingKey::from_secret(b"not the secret"),
        )
        .unwrap();
        assert!(verifier.verify(&forged).is_err());
        assert!(verifier.verify("not.a.jwt").is_err());
    }

    #[test]
    fn a_rotated_jwks_counts_without_a_restart() {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path(), &["HS256"]);
        let verifier = JwtVerifier::load(&settings).unwrap();
        let old = token(Algorithm::HS256, Some("k1"), claims(json!({})));
        assert!(verifier.verify(&old).is_ok());
        // The provider rotates: k1 is gone, k2 signs from now on.
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
        let rotated = json!({"keys": [{"kty": "oct", "kid": "k2", "alg": "HS256", "k": k}]});
        std::fs::write(&settings.jwks_file, rotated.to_string()).unwrap();
        std::thread::sleep(
            super::super::watched::RECHECK_INTERVAL + std::time::Duration::from_millis(20),
        );
        assert!(verifier.verify(&old).unwrap_err().contains("no key"));
        assert!(
            verifier
                .verify(&token(Algorithm::HS256, Some("k2"), claims(json!({}))))
                .is_ok()
        );
    }

    #[test]
    fn a_bad_jwks_or_algorithm_name_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = settings(dir.path(), &["HS257"]);
        assert!(format!("{:#}", JwtVerifier::load(&bad).unwrap_err()).contains("HS257"));
        bad.algorithms = vec!["HS256".into()];
        std::fs::write(&bad.jwks_file, "{\"keys\": []}").unwrap();
        assert!(format!("{:#}", JwtVerifier::load(&bad).unwrap_err()).contains("no key"));
        std::fs::write(&bad.jwks_file, "[1]").unwrap();
        assert!(format!("{:#}", JwtVerifier::load(&bad).unwrap_err()).contains("not a JWKS"));
    }
}
