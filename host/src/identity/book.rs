//! The issued identities as the journal says they are now: every identity with its
//! certificates, who registered it, and whether it is revoked — and the judgement of one
//! certificate against them ([`Book::judge`]).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A certificate was issued: a new identity, or (with `replaces`) a rotation.
    Issued(Issued),
    /// An identity was revoked, with every certificate it has.
    Revoked(Revoked),
}

/// A certificate issued to an identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// The identity.
    pub id: String,
    /// Its label.
    pub name: String,
    /// The subject of the caller that registered it.
    pub owner: String,
    /// The URI SAN.
    pub subject: String,
    /// The scopes it was given.
    pub scopes: Vec<String>,
    /// SHA-256 of the certificate's DER, lower-case hex.
    pub fingerprint: String,
    /// The certificate's serial number, hex.
    pub serial: String,
    /// When it was issued, Unix seconds.
    pub at: i64,
    /// Its `notAfter`, Unix seconds.
    pub not_after: i64,
    /// The fingerprint of the certificate this one replaces (a rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// An identity revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// The identity.
    pub id: String,
    /// When, Unix seconds.
    pub at: i64,
    /// Why, as the operator said it.
    #[serde(default)]
    pub reason: String,
}

/// One identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its id (`idn_…`).
    pub id: String,
    /// Its label.
    pub name: String,
    /// Who registered it.
    pub owner: String,
    /// Its URI SAN.
    pub subject: String,
    /// The scopes it was given.
    pub scopes: Vec<String>,
    /// When it was registered, Unix seconds.
    pub registered_at: i64,
    /// Its certificates, oldest first; the last is the current one.
    pub certs: Vec<Cert>,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

impl Identity {
    /// The current certificate.
    pub fn current(&self) -> Option<&Cert> {
        self.certs.last()
    }
}

/// One certificate of an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    /// SHA-256 of its DER, lower-case hex.
    pub fingerprint: String,
    /// Serial number, hex.
    pub serial: String,
    /// Issued at, Unix seconds.
    pub issued_at: i64,
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
    /// When a rotation replaced it.
    pub replaced_at: Option<i64>,
}

/// Why a certificate of the identity CA is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The store has no record of it (issued elsewhere, or the store was replaced).
    Unknown,
    /// Its identity is revoked.
    Revoked,
    /// Past its `notAfter`.
    Expired,
    /// Replaced by a rotation longer ago than the overlap.
    Replaced,
    /// The store has not been readable for a while: nothing it says is current.
    StoreUnavailable,
}

impl Refusal {
    /// The reason, for answers, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => {
                "client certificate is not one this gateway's identity CA has on record"
            }
            Self::Revoked => "client certificate is revoked",
            Self::Expired => "client certificate has expired",
            Self::Replaced => "client certificate was replaced by a rotation",
            Self::StoreUnavailable => {
                "the identity store cannot be read, so no certificate of the identity CA is \
                 accepted until it can"
            }
        }
    }

    /// A metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Replaced => "replaced",
            Self::StoreUnavailable => "store_unavailable",
        }
    }
}

/// A journal line that does not follow from the ones before it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Inconsistent(pub String);

/// Every identity, by id and by certificate fingerprint.
#[derive(Debug, Clone, Default)]
pub struct Book {
    identities: HashMap<String, Arc<Identity>>,
    by_fingerprint: HashMap<String, String>,
    held: HashMap<String, u32>,
    /// Every subject ever issued, lower-case.
    subjects: std::collections::HashSet<String>,
}

impl Book {
    /// The identity `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<Identity>> {
        self.identities.get(id)
    }

    /// Every identity, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Identity>> {
        self.identities.values()
    }

    /// How many identities are on record.
    pub fn len(&self) -> usize {
        self.identities.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    /// Identities `owner` holds, revoked ones not counted.
    pub fn held_by(&self, owner: &str) -> u32 {
        self.held.get(owner).copied().unwrap_or(0)
    }

    /// Whether `subject` (compared case-blind) was ever given to an identity.
    pub fn has_subject(&self, subject: &str) -> bool {
        self.subjects.contains(&subject.to_ascii_lowercase())
    }

    /// Whether a certificate with this fingerprint was ever issued.
    pub fn knows(&self, fingerprint: &str) -> bool {
        self.by_fingerprint.contains_key(fingerprint)
    }

    /// The identity of the certificate with `fingerprint`, when that certificate is good at
    /// `now`: on record, its identity not revoked, not expired, and not replaced more than
    /// `overlap` seconds ago.
    pub fn judge(
        &self,
        fingerprint: &str,
        now: i64,
        overlap: i64,
    ) -> Result<&Arc<Identity>, Refusal> {
        let identity = self
            .by_fingerprint
            .get(fingerprint)
            .and_then(|id| self.identities.get(id))
            .ok_or(Refusal::Unknown)?;
        let cert = identity
            .certs
            .iter()
            .find(|c| c.fingerprint == fingerprint)
            .ok_or(Refusal::Unknown)?;
        if identity.revoked_at.is_some() {
            return Err(Refusal::Revoked);
        }
        if now >= cert.not_after {
            return Err(Refusal::Expired);
        }
        if cert
            .replaced_at
            .is_some_and(|at| now >= at.saturating_add(overlap))
        {
            return Err(Refusal::Replaced);
        }
        Ok(identity)
    }

    /// Applies one event; an event that contradicts the book is refused and changes nothing.
    pub fn apply(&mut self, event: &Event) -> Result<(), Inconsistent> {
        self.check(event)?;
        self.commit(event);
        Ok(())
    }

    /// Whether `event` follows from the book as it is (what [`Book::apply`] refuses).
    pub fn check(&self, event: &Event) -> Result<(), Inconsistent> {
        match event {
            Event::Revoked(revoked) if !self.identities.contains_key(&revoked.id) => Err(
                Inconsistent(format!("revokes `{}`, which was never issued", revoked.id)),
            ),
            Event::Revoked(_) => Ok(()),
            Event::Issued(issued) if self.by_fingerprint.contains_key(&issued.fingerprint) => {
                Err(Inconsistent(format!(
                    "issues the certificate `{}` a second time",
                    issued.fingerprint
                )))
            }
            Event::Issued(issued) => match (&issued.replaces, self.identities.get(&issued.id)) {
                (None, Some(_)) => Err(Inconsistent(format!(
                    "registers `{}`, which already exists",
                    issued.id
                ))),
                (None, None) => Ok(()),
                (Some(_), None) => Err(Inconsistent(format!(
                    "rotates `{}`, which was never issued",
                    issued.id
                ))),
                (Some(replaced), Some(identity)) => {
                    if identity.current().map(|c| &c.fingerprint) == Some(replaced) {
                        Ok(())
                    } else {
                        Err(Inconsistent(format!(
                            "rotates `{}` from `{replaced}`, which is not its current \
                             certificate",
                            issued.id
                        )))
                    }
                }
            },
        }
    }

    /// Applies an event [`Book::check`] accepted.
    fn commit(&mut self, event: &Event) {
        match event {
            Event::Revoked(revoked) => {
                if let Some(identity) = self.identities.get_mut(&revoked.id)
                    && identity.revoked_at.is_none()
                {
                    Arc::make_mut(identity).revoked_at = Some(revoked.at);
                    if let Some(held) = self.held.get_mut(&identity.owner) {
                        *held = held.saturating_sub(1);
                    }
                }
            }
            Event::Issued(issued) => self.issue(issued),
        }
    }

    fn issue(&mut self, issued: &Issued) {
        let cert = Cert {
            fingerprint: issued.fingerprint.clone(),
            serial: issued.serial.clone(),
            issued_at: issued.at,
            not_after: issued.not_after,
            replaced_at: None,
        };
        match &issued.replaces {
            None => {
                self.identities.insert(
                    issued.id.clone(),
                    Arc::new(Identity {
                        id: issued.id.clone(),
                        name: issued.name.clone(),
                        owner: issued.owner.clone(),
                        subject: issued.subject.clone(),
                        scopes: issued.scopes.clone(),
                        registered_at: issued.at,
                        certs: vec![cert],
                        revoked_at: None,
                    }),
                );
                *self.held.entry(issued.owner.clone()).or_default() += 1;
                self.subjects.insert(issued.subject.to_ascii_lowercase());
            }
            Some(_) => {
                if let Some(identity) = self.identities.get_mut(&issued.id) {
                    let identity = Arc::make_mut(identity);
                    if let Some(current) = identity.certs.last_mut() {
                        current.replaced_at = Some(issued.at);
                    }
                    identity.name.clone_from(&issued.name);
                    identity.certs.push(cert);
                }
            }
        }
        self.by_fingerprint
            .insert(issued.fingerprint.clone(), issued.id.clone());
    }
}
