//! Facts about the running backend: its database, its user and whether that user may
//! administer tenants, and the clock. The lowest layer of the extension: it imports nothing
//! of it.

use pgrx::pg_sys;

/// This backend's database.
pub fn db() -> u32 {
    // SAFETY: plain read of a backend global.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// Whether role `oid` may administer tenants: a superuser or a member of ruvector_admin (with
/// its privileges, not only nominally).
pub fn role_is_admin(oid: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups in a transaction.
    unsafe {
        if pg_sys::superuser_arg(oid) {
            return true;
        }
        let admin = pg_sys::get_role_oid(c"ruvector_admin".as_ptr(), true);
        admin != pg_sys::InvalidOid && pg_sys::has_privs_of_role(oid, admin)
    }
}

/// Whether the current user may administer tenants.
pub fn is_admin() -> bool {
    // SAFETY: plain query of the current user (callers are in a transaction).
    role_is_admin(unsafe { pg_sys::GetUserId() })
}

/// The name of role `oid` (empty if it does not exist).
pub fn role_name(oid: pg_sys::Oid) -> String {
    // SAFETY: GetUserNameFromId returns a palloc'd copy or NULL with noerr.
    unsafe {
        let p = pg_sys::GetUserNameFromId(oid, true);
        if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// The name of relation `oid` (empty if it does not exist).
pub fn relation_name(oid: pg_sys::Oid) -> String {
    // SAFETY: get_rel_name returns a palloc'd copy or NULL.
    unsafe {
        let p = pg_sys::get_rel_name(oid);
        if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// Whether the server is a standby (or still recovering after a crash): nothing may be
/// written.
pub fn in_recovery() -> bool {
    // SAFETY: reads the shared recovery state; valid in any process attached to shared memory.
    unsafe { pg_sys::RecoveryInProgress() }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
