//! Exit codes and the error kinds behind them (shared with the daemon's JSON-RPC errors).

use hush_client_core::{ClientError, MachineError};

/// Why a command failed, as scripts see it: the exit code and a stable `kind` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anything not listed below (exit 1).
    Other,
    /// A bad argument (exit 2, the same code clap uses for usage errors).
    Usage,
    /// The server could not be reached, or a wait ran out (exit 3).
    Network,
    /// A contact's identity key changed and is not trusted yet (exit 4).
    UntrustedIdentity,
    /// The server refused because of its rate limit (exit 5).
    RateLimited,
    /// A recipient's mailbox on the server is full; the message stays queued (exit 6).
    MailboxFull,
}

impl Kind {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Other => 1,
            Kind::Usage => 2,
            Kind::Network => 3,
            Kind::UntrustedIdentity => 4,
            Kind::RateLimited => 5,
            Kind::MailboxFull => 6,
        }
    }

    /// The name used in JSON errors.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Other => "other",
            Kind::Usage => "usage",
            Kind::Network => "network",
            Kind::UntrustedIdentity => "untrusted_identity",
            Kind::RateLimited => "rate_limited",
            Kind::MailboxFull => "mailbox_full",
        }
    }
}

/// A failure the CLI decides on itself (not a [`ClientError`]), with its kind.
#[derive(Debug)]
pub struct CliError {
    /// How scripts should see it.
    pub kind: Kind,
    /// What happened and what to do.
    pub message: String,
}

impl CliError {
    /// A failure of `kind`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// The kind of a client-core error.
pub fn client_error_kind(e: &ClientError) -> Kind {
    match e {
        ClientError::Network(_) | ClientError::Timeout(_) => Kind::Network,
        ClientError::IdentityUntrusted(_) | ClientError::Machine(MachineError::IdentityUntrusted(_)) => {
            Kind::UntrustedIdentity
        }
        ClientError::Server { status, code, .. } if *status == 429 || code == "rate_limited" => Kind::RateLimited,
        ClientError::Server { status, .. } if *status >= 500 => Kind::Network,
        ClientError::Invalid(_) => Kind::Usage,
        _ => Kind::Other,
    }
}

/// The kind of any error: a [`CliError`] or a [`ClientError`] anywhere in its chain, else other.
pub fn error_kind(e: &anyhow::Error) -> Kind {
    for cause in e.chain() {
        if let Some(cli) = cause.downcast_ref::<CliError>() {
            return cli.kind;
        }
        if let Some(client) = cause.downcast_ref::<ClientError>() {
            return client_error_kind(client);
        }
    }
    Kind::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_map_to_the_documented_exit_codes() {
        let cases = [
            (ClientError::Network("connection refused".into()), 3),
            (ClientError::Timeout("drain".into()), 3),
            (ClientError::IdentityUntrusted("bob".into()), 4),
            (ClientError::Machine(MachineError::IdentityUntrusted("bob".into())), 4),
            (ClientError::Server { status: 429, code: "rate_limited".into(), message: "slow down".into() }, 5),
            (ClientError::Server { status: 400, code: "rate_limited".into(), message: String::new() }, 5),
            (ClientError::Server { status: 503, code: "unavailable".into(), message: String::new() }, 3),
            (ClientError::Server { status: 409, code: "username_taken".into(), message: String::new() }, 1),
            (ClientError::Invalid("empty message".into()), 2),
            (ClientError::NotRegistered, 1),
            (ClientError::Locked { dir: "/d".into(), pid: Some(7) }, 1),
            (ClientError::Stopped("removed".into()), 1),
            (ClientError::TooLarge(hush_client_core::TooLarge { size: 9, longest: 8, devices: 1 }), 1),
            (ClientError::UnknownUser("carol".into()), 1),
        ];
        for (error, code) in cases {
            assert_eq!(client_error_kind(&error).exit_code(), code, "{error:?}");
        }
    }

    #[test]
    fn the_kind_is_found_through_anyhow_context() {
        let e = anyhow::Error::new(ClientError::IdentityUntrusted("bob".into())).context("sending");
        assert_eq!(error_kind(&e), Kind::UntrustedIdentity);
        let e = anyhow::Error::new(CliError::new(Kind::RateLimited, "later")).context("sending");
        assert_eq!(error_kind(&e), Kind::RateLimited);
        assert_eq!(error_kind(&anyhow::anyhow!("boom")), Kind::Other);
    }
}
