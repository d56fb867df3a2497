//! Client authentication: SCRAM-SHA-256 against the verifiers of `[[users]]`, using
//! pgwire's server-side SCRAM state machine.

use pgwire::api::auth::sasl::scram::{ScramSecret, ScramServerAuth};

use crate::config::UserSecret;

/// Iterations used when deriving a verifier from a plaintext password.
const SCRAM_ITERATIONS: u32 = 4096;

/// A stored SCRAM verifier: what the proxy keeps instead of a password.
#[derive(Clone)]
pub struct Verifier {
    /// always [`UserSecret::Scram`]
    secret: UserSecret,
}

impl Verifier {
    /// Derive (plaintext, with a random salt) or keep (verifier) the SCRAM secret of a
    /// user. Done once at startup, so logins do not pay for PBKDF2.
    pub fn from_secret(secret: &UserSecret) -> Verifier {
        let salt: [u8; 16] = rand::random();
        Verifier {
            secret: secret.to_verifier(&salt, SCRAM_ITERATIONS),
        }
    }

    /// A verifier no password matches, so unknown users go through the same exchange
    /// as known ones and learn nothing from it.
    pub fn impossible() -> Verifier {
        Verifier {
            secret: UserSecret::Scram {
                iterations: SCRAM_ITERATIONS,
                salt: rand::random::<[u8; 16]>().to_vec(),
                stored_key: rand::random::<[u8; 32]>().to_vec(),
                server_key: rand::random::<[u8; 32]>().to_vec(),
            },
        }
    }

    /// The secret in the form pgwire's SCRAM server takes.
    pub fn secret(&self) -> ScramSecret {
        self.secret
            .scram_secret()
            .unwrap_or_else(|| Verifier::impossible().secret())
    }

    /// A fresh server-side SCRAM state machine.
    pub fn server() -> ScramServerAuth {
        ScramServerAuth::new()
    }
}
