//! Domain values, each parsed once at the edge (the webhook, the settings) so that an
//! invalid outlet or SKU cannot exist past it. The id rule is shelfsync's (API.md,
//! Conventions): what passes here passes there. The agent keeps its own copy rather than
//! link the service's crate (Redis, MongoDB and actors on a shop's machine);
//! `tests/agent.rs` holds the two to the same answers.

use std::fmt;

/// Why a value was refused. `field` names what the client sent (`lines[2].sku`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// shelfsync's ids are `[A-Za-z0-9_-]{1,64}`.
const ID_LEN_MAX: usize = 64;

fn check_id(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() || value.len() > ID_LEN_MAX {
        return Err(Invalid::new(field, "must be 1 to 64 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Invalid::new(field, "may hold only A-Z a-z 0-9 _ -"));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(field: &str, value: &str) -> Result<Self, Invalid> {
                check_id(field, value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// The outlet this agent runs at; it names the MQTT topics and every event id.
    OutletId
);
id_type!(
    /// A stock-keeping unit, e.g. `kaju-katli-1kg`.
    Sku
);

/// Milliseconds since the Unix epoch, the unit of every time the store keeps.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A stored time as RFC 3339 UTC with milliseconds, as shelfsync writes its times.
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_shelfsyncs_rule() {
        assert!(Sku::parse("sku", "kaju-katli_1kg").is_ok());
        assert!(Sku::parse("sku", &"a".repeat(64)).is_ok());
        assert!(Sku::parse("sku", &"a".repeat(65)).is_err());
        assert!(Sku::parse("sku", "").is_err());
        assert!(Sku::parse("sku", "kaju katli").is_err());
        assert!(Sku::parse("sku", "käju").is_err());
    }
}
