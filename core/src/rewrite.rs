//! Rewriting the host a backend sees in the handshake.

use crate::hostname::ServerAddress;

/// The host to put in the handshake forwarded to a backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Rewrite {
    /// Forward the handshake bytes exactly as the client sent them.
    #[default]
    None,
    /// Replace the host part with this host; decorations are kept.
    Host(String),
}

impl Rewrite {
    /// The server address to forward for `original`, or `None` to forward the original bytes.
    pub fn apply(&self, original: &str) -> Option<String> {
        match self {
            Rewrite::None => None,
            Rewrite::Host(host) => {
                let split = ServerAddress::split(original);
                Some(format!("{host}{}", split.decoration))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rewrite_keeps_forge_marker() {
        let r = Rewrite::Host("backend.internal".into());
        assert_eq!(
            r.apply("MC.example.com.\0FML2\0").as_deref(),
            Some("backend.internal\0FML2\0")
        );
    }

    #[test]
    fn no_rewrite_forwards_the_original() {
        assert_eq!(Rewrite::None.apply("mc.example.com\0FML\0"), None);
    }

    proptest! {
        #[test]
        fn rewrite_preserves_decorations(host in "[a-z.]{1,30}", decoration in "(\u{0}[^\u{0}]{0,12}){0,4}", new in "[a-z.]{1,30}") {
            let original = format!("{host}{decoration}");
            let out = Rewrite::Host(new.clone()).apply(&original).unwrap_or_default();
            let split = ServerAddress::split(&out);
            prop_assert_eq!(split.host, new.as_str());
            prop_assert_eq!(split.decoration, decoration.as_str());
        }
    }
}
