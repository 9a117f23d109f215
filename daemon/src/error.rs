//! One error type for everything a request can run into, mapped to the
//! status codes of the API contract.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// 400: the input is wrong; the message names the field and the problem.
    Bad(String),
    /// 401: no token or an unknown token.
    Unauthorized(String),
    /// 403: the token's role on the project is too low.
    Forbidden(String),
    /// 404: no such thing (in this project).
    NotFound(String),
    /// 409: duplicate name, wrong state, uuid already used.
    Conflict(String),
    /// 413: body too large.
    TooLarge(String),
    /// 500: our fault (store I/O and the like), never bad input.
    Internal(String),
}

impl Error {
    pub fn status(&self) -> u16 {
        match self {
            Error::Bad(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::Forbidden(_) => 403,
            Error::NotFound(_) => 404,
            Error::Conflict(_) => 409,
            Error::TooLarge(_) => 413,
            Error::Internal(_) => 500,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Error::Bad(m)
            | Error::Unauthorized(m)
            | Error::Forbidden(m)
            | Error::NotFound(m)
            | Error::Conflict(m)
            | Error::TooLarge(m)
            | Error::Internal(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Store failures are ours, not the caller's.
macro_rules! internal_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Internal(format!("store: {e}"))
            }
        }
    )*};
}

internal_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);
