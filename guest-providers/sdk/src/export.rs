//! The export macros: they turn a provider type into the exports of a component.
//!
//! Each macro expands, only when compiling for `wasm32`, to a private module of the provider
//! crate holding (1) the world's bindings, generated there by the build-script macro (see the
//! crate docs for why not here), (2) adapters from the generated types to this crate's
//! [`Request`](crate::Request) and [`Host`](crate::Host), and (3) the `Guest` impl, which keeps
//! the configured provider in a per-instance slot. A component instance is single-threaded,
//! so the slot is a `thread_local!` `RefCell` and the provider needs neither `Send` nor `Sync`.

/// Exports an [`Authenticator`](crate::Authenticator) as the component's `authenticator`
/// world. Call it once per crate, with the provider type.
///
/// ```ignore
/// portcullis_sdk::export_authenticator!(PartnerToken);
/// ```
#[macro_export]
macro_rules! export_authenticator {
    ($provider:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        type __PortcullisProvider = $provider;

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[expect(unsafe_code, reason = "wit-bindgen's canonical ABI glue")]
        mod __portcullis_export {
            $crate::__portcullis_bindings_authenticator!();
            $crate::__portcullis_glue_common!();

            struct Component;

            impl Guest for Component {
                fn configure(config: String) -> Result<(), String> {
                    let provider = $crate::configure_authenticator::<super::__PortcullisProvider>(
                        &config, &WitHost,
                    )?;
                    INSTANCE.with(|slot| *slot.borrow_mut() = Some(provider));
                    Ok(())
                }

                fn authenticate(req: &types::Request) -> types::Verdict {
                    let verdict = INSTANCE.with(|slot| match &*slot.borrow() {
                        Some(provider) => $crate::Authenticator::authenticate(
                            provider,
                            &WitRequest(req),
                            &WitHost,
                        ),
                        None => $crate::Verdict::Deny($crate::__private::not_configured()),
                    });
                    match verdict {
                        $crate::Verdict::Allow(identity) => types::Verdict::Allow(types::Identity {
                            subject: identity.subject,
                            scopes: identity.scopes,
                            claims: identity.claims,
                        }),
                        $crate::Verdict::Deny(denial) => types::Verdict::Deny(denial_to_wit(denial)),
                        $crate::Verdict::Abstain => types::Verdict::Abstain,
                    }
                }
            }

            export!(Component with_types_in self);
        }
    };
}

/// Exports an [`Authorizer`](crate::Authorizer) as the component's `authorizer` world. Call
/// it once per crate, with the provider type.
///
/// ```ignore
/// portcullis_sdk::export_authorizer!(IpAllowlist);
/// ```
#[macro_export]
macro_rules! export_authorizer {
    ($provider:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        type __PortcullisProvider = $provider;

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[expect(unsafe_code, reason = "wit-bindgen's canonical ABI glue")]
        mod __portcullis_export {
            $crate::__portcullis_bindings_authorizer!();
            $crate::__portcullis_glue_common!();

            struct Component;

            impl Guest for Component {
                fn configure(config: String) -> Result<(), String> {
                    let provider = $crate::configure_authorizer::<super::__PortcullisProvider>(
                        &config, &WitHost,
                    )?;
                    INSTANCE.with(|slot| *slot.borrow_mut() = Some(provider));
                    Ok(())
                }

                fn authorize(
                    req: &types::Request,
                    caller: types::Identity,
                ) -> Result<(), types::Denial> {
                    let caller = $crate::Identity {
                        subject: caller.subject,
                        scopes: caller.scopes,
                        claims: caller.claims,
                    };
                    INSTANCE
                        .with(|slot| match &*slot.borrow() {
                            Some(provider) => $crate::Authorizer::authorize(
                                provider,
                                &WitRequest(req),
                                &caller,
                                &WitHost,
                            ),
                            None => Err($crate::__private::not_configured()),
                        })
                        .map_err(denial_to_wit)
                }
            }

            export!(Component with_types_in self);
        }
    };
}

/// The part of the glue both worlds share: the instance slot and the request and host
/// adapters. Expects the world's bindings in the same module.
#[doc(hidden)]
#[macro_export]
macro_rules! __portcullis_glue_common {
    () => {
        use self::portcullis::auth::{host, types};

        ::std::thread_local! {
            static INSTANCE: ::std::cell::RefCell<Option<super::__PortcullisProvider>> =
                const { ::std::cell::RefCell::new(None) };
        }

        fn denial_to_wit(denial: $crate::Denial) -> types::Denial {
            types::Denial {
                status: denial.status,
                code: denial.code,
                reason: denial.reason,
            }
        }

        struct WitRequest<'a>(&'a types::Request);

        impl $crate::Request for WitRequest<'_> {
            fn method(&self) -> String {
                self.0.method()
            }
            fn path(&self) -> String {
                self.0.path()
            }
            fn query(&self) -> Option<String> {
                self.0.query()
            }
            fn header(&self, name: &str) -> Option<String> {
                self.0.header(name)
            }
            fn header_all(&self, name: &str) -> Vec<String> {
                self.0.header_all(name)
            }
            fn header_names(&self) -> Vec<String> {
                self.0.header_names()
            }
            fn peer_addr(&self) -> Option<String> {
                self.0.peer_addr()
            }
            fn client_cert(&self) -> Option<$crate::ClientCert> {
                self.0.client_cert().map(|cert| $crate::ClientCert {
                    subject: cert.subject,
                    sans: cert.sans,
                    sha256_fingerprint: cert.sha256_fingerprint,
                })
            }
            fn mcp(&self) -> Option<$crate::McpMessage> {
                self.0.mcp().map(|message| $crate::McpMessage {
                    session_id: message.session_id,
                    calls: message
                        .calls
                        .into_iter()
                        .map(|call| $crate::McpCall {
                            method: call.method,
                            target: match call.target {
                                types::McpTarget::None => $crate::McpTarget::None,
                                types::McpTarget::Tool(name) => $crate::McpTarget::Tool(name),
                                types::McpTarget::Resource(uri) => $crate::McpTarget::Resource(uri),
                                types::McpTarget::Prompt(name) => $crate::McpTarget::Prompt(name),
                            },
                        })
                        .collect(),
                })
            }
            fn body(&self) -> Option<Vec<u8>> {
                self.0.body()
            }
        }

        struct WitHost;

        impl $crate::Host for WitHost {
            fn log(&self, level: $crate::LogLevel, message: &str) {
                let level = match level {
                    $crate::LogLevel::Trace => host::LogLevel::Trace,
                    $crate::LogLevel::Debug => host::LogLevel::Debug,
                    $crate::LogLevel::Info => host::LogLevel::Info,
                    $crate::LogLevel::Warn => host::LogLevel::Warn,
                    $crate::LogLevel::Error => host::LogLevel::Error,
                };
                host::log(level, message)
            }
            fn secret(&self, name: &str) -> Option<String> {
                host::secret(name)
            }
            fn sha256(&self, data: &[u8]) -> Vec<u8> {
                host::sha256(data)
            }
            fn hmac_sha256(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
                host::hmac_sha256(key, data)
            }
            fn constant_time_eq(&self, a: &[u8], b: &[u8]) -> bool {
                host::constant_time_eq(a, b)
            }
            fn verify_signature(
                &self,
                algorithm: $crate::SignatureAlgorithm,
                key: $crate::PublicKey<'_>,
                message: &[u8],
                signature: &[u8],
            ) -> Result<bool, String> {
                let algorithm = match algorithm {
                    $crate::SignatureAlgorithm::Rs256 => host::SignatureAlgorithm::Rs256,
                    $crate::SignatureAlgorithm::Es256 => host::SignatureAlgorithm::Es256,
                    $crate::SignatureAlgorithm::EdDsa => host::SignatureAlgorithm::EdDsa,
                };
                let key = match key {
                    $crate::PublicKey::Der(der) => host::PublicKey::Der(der.to_vec()),
                    $crate::PublicKey::Jwk(jwk) => host::PublicKey::Jwk(jwk.to_owned()),
                };
                host::verify_signature(algorithm, &key, message, signature)
            }
            fn cache_get(&self, key: &str) -> Option<Vec<u8>> {
                host::cache_get(key)
            }
            fn cache_set(&self, key: &str, value: &[u8], ttl_ms: u32) {
                host::cache_set(key, value, ttl_ms)
            }
            fn cache_add(&self, key: &str, value: &[u8], ttl_ms: u32) -> bool {
                host::cache_add(key, value, ttl_ms)
            }
            fn now_unix_ms(&self) -> u64 {
                host::now_unix_ms()
            }
        }
    };
}
