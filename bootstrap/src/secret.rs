//! The bearer token as a secret: zeroized on drop, never printed.

use std::fmt;

use zeroize::Zeroizing;

/// A bootstrap token, compact JWT form. Whoever holds it can obtain a certificate for
/// its SPIFFE ID once, so it zeroizes on drop and its `Debug` shows only its length.
/// There is deliberately no `Display`: use [`SecretToken::expose`] where it must go out.
pub struct SecretToken(Zeroizing<String>);

impl SecretToken {
    /// Wraps a token read from a file, flag or environment variable.
    pub fn new(token: String) -> Self {
        Self(Zeroizing::new(token))
    }

    /// The token text, for writing to the admin's terminal or sending to the CA.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretToken(<redacted, {} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let t = SecretToken::new("eyJhbGciOi.secret.sig".into());
        assert_eq!(format!("{t:?}"), "SecretToken(<redacted, 21 bytes>)");
        assert_eq!(t.expose(), "eyJhbGciOi.secret.sig");
    }
}
