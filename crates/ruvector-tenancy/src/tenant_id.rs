//! Tenant ids: 1 to 63 characters from `A-Z a-z 0-9 - _ .`; `*` is the admin wildcard.
//!
//! 63 is PostgreSQL's identifier length, so a tenant id can also name a schema, a role or an
//! index suffix without truncation. The character set keeps ids safe in SQL literals, file
//! names, log lines and Prometheus labels without quoting.

/// The longest tenant id.
pub const MAX_TENANT_ID_LEN: usize = 63;

/// The admin wildcard: all tenants (members of `ruvector_admin` only).
pub const WILDCARD: &str = "*";

/// What a `ruvector.tenant_id` value means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantContext<'a> {
    /// Unset or empty: no tenant context.
    None,
    /// `*`: every tenant.
    All,
    /// One tenant.
    Tenant(&'a str),
}

/// Why a tenant id is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidTenantId {
    Empty,
    TooLong { len: usize },
    BadCharacter { ch: char, position: usize },
}

impl std::fmt::Display for InvalidTenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvalidTenantId::Empty => write!(f, "a tenant id cannot be empty"),
            InvalidTenantId::TooLong { len } => {
                write!(
                    f,
                    "a tenant id has at most {MAX_TENANT_ID_LEN} characters, not {len}"
                )
            }
            InvalidTenantId::BadCharacter { ch, position } => write!(
                f,
                "character {ch:?} at position {} is not allowed in a tenant id",
                position + 1
            ),
        }
    }
}

/// Checks a tenant id (not the wildcard).
pub fn validate(id: &str) -> Result<(), InvalidTenantId> {
    if id.is_empty() {
        return Err(InvalidTenantId::Empty);
    }
    if let Some((position, ch)) = id
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(InvalidTenantId::BadCharacter { ch, position });
    }
    if id.len() > MAX_TENANT_ID_LEN {
        return Err(InvalidTenantId::TooLong { len: id.len() });
    }
    Ok(())
}

/// Reads a `ruvector.tenant_id` setting.
pub fn parse_context(setting: Option<&str>) -> Result<TenantContext<'_>, InvalidTenantId> {
    match setting {
        None | Some("") => Ok(TenantContext::None),
        Some(WILDCARD) => Ok(TenantContext::All),
        Some(id) => validate(id).map(|()| TenantContext::Tenant(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_documented_format() {
        for id in ["acme-corp", "a", "T_1.prod", &"x".repeat(63)] {
            assert_eq!(validate(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(validate(""), Err(InvalidTenantId::Empty));
        assert_eq!(
            validate(&"x".repeat(64)),
            Err(InvalidTenantId::TooLong { len: 64 })
        );
        assert_eq!(
            validate("a b"),
            Err(InvalidTenantId::BadCharacter {
                ch: ' ',
                position: 1
            })
        );
        assert_eq!(
            validate("acme'--"),
            Err(InvalidTenantId::BadCharacter {
                ch: '\'',
                position: 4
            })
        );
        assert!(validate("é").is_err());
        assert!(validate("a*").is_err());
        assert!(validate("*").is_err(), "the wildcard is not a tenant id");
    }

    #[test]
    fn contexts() {
        assert_eq!(parse_context(None), Ok(TenantContext::None));
        assert_eq!(parse_context(Some("")), Ok(TenantContext::None));
        assert_eq!(parse_context(Some("*")), Ok(TenantContext::All));
        assert_eq!(
            parse_context(Some("acme")),
            Ok(TenantContext::Tenant("acme"))
        );
        assert!(parse_context(Some("ac me")).is_err());
    }

    proptest! {
        #[test]
        fn valid_ids_are_exactly_the_documented_set(s in "\\PC{0,70}") {
            let expected = !s.is_empty() && s.len() <= 63
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            prop_assert_eq!(validate(&s).is_ok(), expected);
        }
    }
}
