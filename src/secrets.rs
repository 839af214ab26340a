//! Passwords kept in the operating system's keyring: the Secret Service on
//! Linux (GNOME Keyring, KWallet, KeePassXC), the login Keychain on macOS.
//!
//! Every entry is filed under the service `photosync` and an account name
//! the config chooses (`password_keyring = "ACCOUNT"`); `photosync password
//! set NAME` stores it. A secret is read when it is needed, so a changed
//! password needs no restart, and it is never logged or shown.
//!
//! The keyring is reached over D-Bus on Linux with a blocking client of its
//! own, which must not run on an async runtime's thread: every call here
//! runs on a short-lived thread of its own.

use std::fmt;

/// The keyring service every photosync entry is filed under.
pub const SERVICE: &str = "photosync";

/// Why a keyring call did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// The keyring holds no entry for this account.
    Missing(String),
    /// No keyring is reachable (no Secret Service on the session bus, a
    /// headless session), or it refused.
    Unavailable(String),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(account) => write!(
                f,
                "the keyring holds no password for `{account}` (service {SERVICE}); store it with `photosync password set`"
            ),
            Self::Unavailable(why) => write!(
                f,
                "the keyring is not available ({why}); where no desktop session runs one, use password_env or password_file"
            ),
        }
    }
}

impl std::error::Error for SecretError {}

/// The password filed under `account`.
pub fn read(account: &str) -> Result<String, SecretError> {
    let account = account.to_owned();
    on_own_thread(move || {
        let password = entry(&account)?.get_password().map_err(|e| classify(&account, e))?;
        if password.is_empty() { Err(SecretError::Missing(account)) } else { Ok(password) }
    })
}

/// Files `password` under `account`, replacing what was there.
pub fn store(account: &str, password: &str) -> Result<(), SecretError> {
    let (account, password) = (account.to_owned(), password.to_owned());
    on_own_thread(move || entry(&account)?.set_password(&password).map_err(|e| classify(&account, e)))
}

/// Removes the entry for `account`; false when there was none.
pub fn forget(account: &str) -> Result<bool, SecretError> {
    let account = account.to_owned();
    on_own_thread(move || match entry(&account)?.delete_credential() {
        Ok(()) => Ok(true),
        Err(keyring::Error::NoEntry) => Ok(false),
        Err(e) => Err(classify(&account, e)),
    })
}

fn entry(account: &str) -> Result<keyring::Entry, SecretError> {
    keyring::Entry::new(SERVICE, account).map_err(|e| match keyring::Entry::store_status() {
        Err(why) => SecretError::Unavailable(describe(why)),
        Ok(()) => classify(account, e),
    })
}

fn classify(account: &str, error: keyring::Error) -> SecretError {
    match error {
        keyring::Error::NoEntry => SecretError::Missing(account.to_owned()),
        other => SecretError::Unavailable(describe(&other)),
    }
}

/// The error in words, naming the usual cause of a missing store.
fn describe(error: &keyring::Error) -> String {
    match error {
        keyring::Error::NoDefaultStore => "no Secret Service answers on the session bus".into(),
        keyring::Error::NoStorageAccess(_) => "the keyring is locked or refused access".into(),
        other => other.to_string(),
    }
}

/// Runs `call` on a thread of its own and waits for it.
fn on_own_thread<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, SecretError> + Send + 'static,
) -> Result<T, SecretError> {
    std::thread::Builder::new()
        .name("keyring".into())
        .spawn(call)
        .map_err(|e| SecretError::Unavailable(format!("cannot start a thread: {e}")))?
        .join()
        .unwrap_or_else(|_| Err(SecretError::Unavailable("the keyring client panicked".into())))
}
