//! What the SQL stores share: how database and migration errors map to
//! `StoreError`, whichever database raised them.

use sqlx::migrate::MigrateError;

use super::StoreError;

/// Map a database error to the store's error kinds. Constraint violations are
/// `Conflict`: retrying cannot help, unlike `Unavailable`.
pub(crate) fn db_error(e: sqlx::Error) -> StoreError {
    use sqlx::error::ErrorKind;
    match &e {
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation => StoreError::Conflict(db.message().to_owned()),
            ErrorKind::ForeignKeyViolation => StoreError::Conflict(format!(
                "{} (a referenced row does not exist)",
                db.message()
            )),
            ErrorKind::NotNullViolation | ErrorKind::CheckViolation => {
                StoreError::Conflict(db.message().to_owned())
            }
            // Busy or locked database, disk full, I/O errors and the like.
            _ => StoreError::Unavailable(db.message().to_owned()),
        },
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

pub(crate) fn migrate_error(schema: &str, e: MigrateError) -> StoreError {
    let hint = match &e {
        MigrateError::VersionMissing(_) => {
            " (the database was migrated by a newer meridian; run that version or restore a backup)"
        }
        MigrateError::VersionMismatch(_) => {
            " (an applied migration was edited after it ran; restore the original file)"
        }
        MigrateError::Dirty(_) => " (a migration failed half-way; repair the database by hand)",
        _ => "",
    };
    StoreError::Migration(format!("{schema} schema: {e}{hint}"))
}

pub(crate) fn corrupt(table: &str, what: String) -> StoreError {
    StoreError::Corrupt(format!("{table}: unexpected {what}"))
}
