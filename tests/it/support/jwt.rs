//! NATS decentralized authentication made in the test, where `nsc` is not available: an operator,
//! accounts with JetStream enabled, and users with their creds files, as NATS JWT v2 signed with
//! nkeys (the layout of nats-io/jwt v2).
//!
//! A JWT is `base64url(header).base64url(claims).base64url(signature)`, unpadded; the signature is
//! the issuer's ed25519 signature of the first two parts. `jti` is the unpadded base32 of the
//! SHA-512/256 of the standard claims (`iat`, `iss`, `name`, `sub`) without `jti`, as nats-io/jwt
//! computes it; nats-server does not check it, but it keeps the tokens like `nsc`'s.

use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde_json::{Value, json};
use sha2::{Digest, Sha512_256};

/// The trust root: nats-server's `operator` setting holds its self-signed JWT.
pub struct Operator {
    key: KeyPair,
    pub jwt: String,
}

/// An account signed by an operator: the server must know its JWT (`resolver_preload`).
pub struct Account {
    key: KeyPair,
    pub jwt: String,
}

impl Operator {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::new_operator();
        let nats = json!({ "type": "operator", "version": 2 });
        let jwt = sign(&key, &key.public_key(), name, nats);
        Self { key, jwt }
    }

    /// A new account with no limits and JetStream enabled (unlimited memory and file storage).
    pub fn account(&self, name: &str) -> Account {
        self.new_account(name, true)
    }

    /// A new account for `system_account`: nats-server refuses to start when the system account
    /// has JetStream limits ("Not allowed to enable JetStream on the system account").
    pub fn system_account(&self) -> Account {
        self.new_account("SYS", false)
    }

    fn new_account(&self, name: &str, jetstream: bool) -> Account {
        let key = KeyPair::new_account();
        let mut limits = json!({
            "subs": -1, "data": -1, "payload": -1,
            "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
        });
        if jetstream {
            for limit in ["mem_storage", "disk_storage", "streams", "consumer"] {
                limits[limit] = (-1).into();
            }
        }
        let nats = json!({ "type": "account", "version": 2, "limits": limits });
        let jwt = sign(&self.key, &key.public_key(), name, nats);
        Account { key, jwt }
    }

    /// A nats-server configuration trusting this operator (its JWT in `operator_jwt`, a file the
    /// caller writes), with `accounts` preloaded into a memory resolver and `system` as the system
    /// account. `extra` is appended (a `tls` block, for example).
    pub fn server_config(
        &self,
        operator_jwt: &std::path::Path,
        system: &Account,
        accounts: &[&Account],
        extra: &str,
    ) -> String {
        let preload: String = std::iter::once(system)
            .chain(accounts.iter().copied())
            .map(|a| format!("  {}: \"{}\"\n", a.public_key(), a.jwt))
            .collect();
        format!(
            "operator: {operator_jwt:?}\nsystem_account: {}\nresolver: MEMORY\n\
             resolver_preload: {{\n{preload}}}\n{extra}",
            system.public_key()
        )
    }
}

impl Account {
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The text of a creds file for a new user of this account, unrestricted.
    pub fn user_creds(&self, name: &str) -> String {
        let user = KeyPair::new_user();
        creds(
            &self.user_jwt(&user, name),
            &user.seed().expect("a user seed"),
        )
    }

    /// A JWT for `user`, issued by this account.
    pub fn user_jwt(&self, user: &KeyPair, name: &str) -> String {
        let nats = json!({
            "type": "user", "version": 2,
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
        });
        sign(&self.key, &user.public_key(), name, nats)
    }
}

/// A creds file as `nsc` writes it: the user JWT, then the user's seed.
pub fn creds(user_jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// A JWT with claims about `subject`, issued and signed by `issuer`; `nats` is the typed part.
fn sign(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    // serde_json orders keys alphabetically, which for these four is also the order of
    // nats-io/jwt's ClaimsData, so the hash input matches theirs byte for byte.
    let mut claims =
        json!({ "iat": iat, "iss": issuer.public_key(), "name": name, "sub": subject });
    let jti = BASE32_NOPAD.encode(&Sha512_256::digest(claims.to_string().as_bytes()));
    claims["jti"] = jti.into();
    claims["nats"] = nats;
    let header = json!({ "typ": "JWT", "alg": "ed25519-nkey" });
    let signed = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
    );
    let signature = issuer.sign(signed.as_bytes()).expect("an nkey signature");
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}
