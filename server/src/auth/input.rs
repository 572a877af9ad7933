//! Validation of what clients send to the account endpoints: usernames,
//! display names, passwords, guest device secrets and teams, each refused with
//! a clear reason.

/// Prefix of generated guest usernames, reserved so that no one can register a
/// name a guest account could be given.
pub const GUEST_PREFIX: &str = "guest-";

/// Allowed username lengths, in characters.
pub const USERNAME_LEN: std::ops::RangeInclusive<usize> = 3..=32;
/// Allowed password lengths, in bytes (the upper bound keeps hashing cheap to refuse).
pub const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 8..=128;
/// Allowed display name lengths, in characters (after trimming).
pub const DISPLAY_NAME_LEN: std::ops::RangeInclusive<usize> = 1..=32;
/// Allowed guest device secret lengths, in characters.
pub const DEVICE_ID_LEN: std::ops::RangeInclusive<usize> = 16..=128;

/// A refused input; the message is written for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The username breaks a rule.
    #[error("{0}")]
    Username(&'static str),
    /// The display name breaks a rule.
    #[error("{0}")]
    DisplayName(&'static str),
    /// The password breaks a rule.
    #[error("{0}")]
    Password(&'static str),
    /// The guest device secret breaks a rule.
    #[error("{0}")]
    DeviceId(&'static str),
    /// The chosen team does not exist; the message lists the ones that do.
    #[error("{0}")]
    Team(String),
}

/// Check a display name and return it trimmed: 1 to 32 characters of any
/// script and punctuation, quotes and semicolons included (it is only ever
/// bound as a query parameter and shown as text), but no control, bidi or
/// invisible characters, which could disturb other players' screens.
///
/// # Errors
/// `InputError::DisplayName` naming the broken rule.
pub fn validate_display_name(name: &str) -> Result<String, InputError> {
    let name = name.trim();
    if !DISPLAY_NAME_LEN.contains(&name.chars().count()) {
        return Err(InputError::DisplayName(
            "display name must be 1 to 32 characters long",
        ));
    }
    if crate::world::chat::clean(name) != name {
        return Err(InputError::DisplayName(
            "display name may not contain control characters",
        ));
    }
    if name.chars().any(is_invisible) {
        return Err(InputError::DisplayName(
            "display name may not contain invisible characters",
        ));
    }
    Ok(name.to_owned())
}

/// Characters that show nothing (zero-width spaces and joiners, word
/// joiners, the byte-order mark, soft hyphens): a name made of them, or
/// one padded with them to pass for another, would be unreadable.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

/// Check a new username: 3 to 32 characters of `A-Z a-z 0-9 _ . -`, starting
/// with a letter or digit, not starting with the guest prefix.
///
/// # Errors
/// `InputError::Username` naming the broken rule.
pub fn validate_username(username: &str) -> Result<(), InputError> {
    if !USERNAME_LEN.contains(&username.chars().count()) {
        return Err(InputError::Username(
            "username must be 3 to 32 characters long",
        ));
    }
    if !username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(InputError::Username(
            "username may contain only letters A-Z and a-z, digits, '_', '.' and '-'",
        ));
    }
    if !username.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(InputError::Username(
            "username must start with a letter or a digit",
        ));
    }
    if username
        .get(..GUEST_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(GUEST_PREFIX))
    {
        return Err(InputError::Username(
            "usernames starting with 'guest-' are reserved for guest accounts",
        ));
    }
    Ok(())
}

/// Check a new password: 8 to 128 bytes, and not the username.
///
/// # Errors
/// `InputError::Password` naming the broken rule.
pub fn validate_password(password: &str, username: &str) -> Result<(), InputError> {
    if !PASSWORD_LEN.contains(&password.len()) {
        return Err(InputError::Password("password must be 8 to 128 bytes long"));
    }
    if password.eq_ignore_ascii_case(username) {
        return Err(InputError::Password(
            "password must not be the same as the username",
        ));
    }
    Ok(())
}

/// Check a client-chosen guest device secret: 16 to 128 printable ASCII
/// characters (no spaces), so that every client hashes the same bytes.
///
/// # Errors
/// `InputError::DeviceId` naming the broken rule.
pub fn validate_device_id(device_id: &str) -> Result<(), InputError> {
    if !DEVICE_ID_LEN.contains(&device_id.len()) {
        return Err(InputError::DeviceId(
            "device_id must be 16 to 128 characters long",
        ));
    }
    if !device_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InputError::DeviceId(
            "device_id may contain only printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

/// Check a chosen team: one of `teams` (names as stored, compared exactly).
///
/// # Errors
/// `InputError::Team` listing the teams there are.
pub fn validate_team(team: &str, teams: &[String]) -> Result<(), InputError> {
    if teams.iter().any(|t| t == team) {
        return Ok(());
    }
    Err(InputError::Team(format!(
        "team must be one of: {}",
        teams.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_usernames_pass() {
        for name in ["abc", "Alice_99", "9lives", "a.b-c_d", &"x".repeat(32)] {
            assert_eq!(validate_username(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn bad_usernames_say_why() {
        let cases = [
            ("ab", "3 to 32"),
            (&"x".repeat(33), "3 to 32"),
            ("", "3 to 32"),
            ("has space", "only letters"),
            ("émile", "only letters"),
            ("semi;colon", "only letters"),
            ("_alice", "start with"),
            (".alice", "start with"),
            ("-alice", "start with"),
            ("guest-1234abcd", "reserved"),
            ("GUEST-x", "reserved"),
        ];
        for (name, why) in cases {
            let err = validate_username(name).unwrap_err();
            assert!(err.to_string().contains(why), "{name}: {err}");
        }
        assert_eq!(validate_username("guest"), Ok(()));
    }

    #[test]
    fn password_rules() {
        assert_eq!(validate_password("12345678", "alice"), Ok(()));
        assert_eq!(validate_password(&"p".repeat(128), "alice"), Ok(()));
        for (password, why) in [
            ("1234567", "8 to 128"),
            (&"p".repeat(129), "8 to 128"),
            ("alice_99", "same as the username"),
            ("ALICE_99", "same as the username"),
        ] {
            let err = validate_password(password, "alice_99").unwrap_err();
            assert!(err.to_string().contains(why), "{password}: {err}");
        }
        // Multi-byte characters count as their bytes.
        assert!(validate_password("ééé", "alice").is_err());
        assert!(validate_password("éééé", "alice").is_ok());
    }

    #[test]
    fn device_id_rules() {
        assert_eq!(validate_device_id(&"d".repeat(16)), Ok(()));
        assert_eq!(validate_device_id(&"d".repeat(128)), Ok(()));
        assert!(validate_device_id(&"d".repeat(15)).is_err());
        assert!(validate_device_id(&"d".repeat(129)).is_err());
        assert!(validate_device_id("with a space in it!!").is_err());
    }

    #[test]
    fn team_rules() {
        let teams = ["red".to_owned(), "blue".to_owned()];
        assert_eq!(validate_team("blue", &teams), Ok(()));
        for team in ["green", "", "Red", " red"] {
            let err = validate_team(team, &teams).unwrap_err();
            assert_eq!(
                err.to_string(),
                "team must be one of: red, blue",
                "{team:?}"
            );
        }
    }
}
