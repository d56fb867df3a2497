//! Client authentication: SCRAM-SHA-256 against the verifiers of `[[users]]`, using
//! pgwire's server-side SCRAM state machine.

use pgwire::api::auth::sasl::scram::{ScramSecret, ScramServerAuth, gen_salted_password};

use crate::config::UserSecret;

/// Iterations used when deriving a verifier from a plaintext password.
const SCRAM_ITERATIONS: usize = 4096;

/// A stored SCRAM verifier: what the proxy keeps instead of a password.
#[derive(Clone)]
pub struct Verifier {
    salt: Vec<u8>,
    iterations: usize,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl Verifier {
    /// Derive (plaintext) or copy (verifier) the SCRAM secret of a user. Done once at
    /// startup, so logins do not pay for PBKDF2.
    pub fn from_secret(secret: &UserSecret) -> Verifier {
        match secret {
            UserSecret::Plain(password) => {
                let salt: [u8; 16] = rand::random();
                let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
                match ScramSecret::verifier_from_salted_password(
                    salt.to_vec(),
                    salted,
                    SCRAM_ITERATIONS,
                ) {
                    ScramSecret::Verifier {
                        salt,
                        iterations,
                        stored_key,
                        server_key,
                    } => Verifier {
                        salt,
                        iterations,
                        stored_key,
                        server_key,
                    },
                    ScramSecret::SaltedPassword { .. } => unreachable!("verifier requested"),
                }
            }
            UserSecret::Scram {
                iterations,
                salt,
                stored_key,
                server_key,
            } => Verifier {
                salt: salt.clone(),
                iterations: *iterations as usize,
                stored_key: stored_key.clone(),
                server_key: server_key.clone(),
            },
        }
    }

    /// A verifier no password matches, so unknown users go through the same exchange
    /// as known ones and learn nothing from it.
    pub fn impossible() -> Verifier {
        Verifier {
            salt: rand::random::<[u8; 16]>().to_vec(),
            iterations: SCRAM_ITERATIONS,
            stored_key: rand::random::<[u8; 32]>().to_vec(),
            server_key: rand::random::<[u8; 32]>().to_vec(),
        }
    }

    /// The secret in the form pgwire's SCRAM server takes.
    pub fn secret(&self) -> ScramSecret {
        ScramSecret::Verifier {
            salt: self.salt.clone(),
            iterations: self.iterations,
            stored_key: self.stored_key.clone(),
            server_key: self.server_key.clone(),
        }
    }

    /// A fresh server-side SCRAM state machine.
    pub fn server() -> ScramServerAuth {
        ScramServerAuth::new()
    }
}
