//! SQLCipher's per-page crypto through aws-lc-rs, each key scheduled once
//! per connection.
//!
//! SQLCipher's OpenSSL 3 provider builds its primitives afresh for every
//! page: it fetches HMAC and SHA-256 by name from OpenSSL's provider store
//! (a global lock), creates and frees a MAC context and a cipher context,
//! and expands the AES key again. That is a fixed cost on every page read
//! and every page written — on the commit thread, the one serial part of
//! ingest. Without it the CPU that encryption adds fell from 21 % to 14 %
//! for ingest and from 20 % to 12 % for a form export (#14's note). Here the two functions that run per page, `hmac` and `cipher`,
//! are replaced in the provider SQLCipher copies into each new connection;
//! the keys they are given are kept scheduled (an `hmac::Key`, an AES key)
//! in the connection's provider context and reused while they stay the
//! same. The random IV of every page written comes from aws-lc's
//! generator, which needs no lock (the stock one takes a global mutex
//! around OpenSSL's). The bytes are the same (AES-256-CBC without padding,
//! HMAC-SHA1/256/512): a file written either way opens the other way
//! (tested below against the stock functions). Everything else (key
//! derivation, activation, the file's layout) stays SQLCipher's own.
//!
//! [`install`] runs before every keyed open (once in effect); a connection
//! keyed before it keeps the stock functions, which are slower and
//! otherwise the same.

use std::ffi::{c_int, c_void};
use std::sync::{Once, OnceLock};

use aws_lc_rs::cipher::{
    DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey, AES_256,
};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use zeroize::Zeroizing;

const SQLITE_OK: c_int = 0;
const SQLITE_ERROR: c_int = 1;

// SQLCipher's constants (sqlcipher.h).
const CIPHER_ENCRYPT: c_int = 1;
const CIPHER_DECRYPT: c_int = 0;
const HMAC_SHA1: c_int = 0;
const HMAC_SHA256: c_int = 1;
const HMAC_SHA512: c_int = 2;

type HmacFn = unsafe extern "C" fn(
    ctx: *mut c_void,
    algorithm: c_int,
    hmac_key: *mut u8,
    key_sz: c_int,
    input: *mut u8,
    in_sz: c_int,
    input2: *mut u8,
    in2_sz: c_int,
    out: *mut u8,
) -> c_int;
type CipherFn = unsafe extern "C" fn(
    ctx: *mut c_void,
    mode: c_int,
    key: *mut u8,
    key_sz: c_int,
    iv: *mut u8,
    input: *mut u8,
    in_sz: c_int,
    out: *mut u8,
) -> c_int;
type RandomFn = unsafe extern "C" fn(ctx: *mut c_void, buffer: *mut c_void, length: c_int) -> c_int;
type CtxFn = unsafe extern "C" fn(ctx: *mut *mut c_void) -> c_int;
type Other = *const c_void;

/// `sqlcipher_provider` (sqlcipher.h), field for field.
#[repr(C)]
struct Provider {
    activate: Other,
    deactivate: Other,
    get_provider_name: Other,
    add_random: Other,
    random: RandomFn,
    hmac: HmacFn,
    kdf: Other,
    cipher: CipherFn,
    get_cipher: Other,
    get_key_sz: Other,
    get_iv_sz: Other,
    get_block_sz: Other,
    get_hmac_sz: Other,
    ctx_init: CtxFn,
    ctx_free: CtxFn,
    fips_status: Other,
    get_provider_version: Other,
}

unsafe extern "C" {
    #[cfg(test)]
    fn sqlcipher_get_provider() -> *mut Provider;
    fn sqlcipher_register_provider(p: *mut Provider) -> c_int;
    fn sqlcipher_openssl_setup(p: *mut Provider) -> c_int;
    fn sqlcipher_malloc(size: u64) -> *mut c_void;
}

/// The stock provider's own functions, for what ours wrap.
struct Stock {
    ctx_init: CtxFn,
    ctx_free: CtxFn,
}

static STOCK: OnceLock<Stock> = OnceLock::new();
static INSTALLED: Once = Once::new();

/// Makes ours the provider every keyed connection opened afterwards
/// copies. Called before every keyed open; does its work once.
pub fn install() {
    // SAFETY: SQLCipher's provider API, used as its comments describe.
    INSTALLED.call_once(|| unsafe { install_once() });
}

/// SQLCipher frees its registered provider and its own mutexes whenever
/// its last keyed connection closes, and makes a stock provider at the
/// next keyed open. A keyed connection to a private temporary database,
/// opened here and never closed, keeps it from ever getting there, so the
/// provider registered once stays. (Registering anew at each open instead
/// would take mutexes SQLCipher may have freed.)
unsafe fn install_once() {
    let mut anchor = std::ptr::null_mut();
    let flags = libsqlite3_sys::SQLITE_OPEN_READWRITE | libsqlite3_sys::SQLITE_OPEN_CREATE;
    // SAFETY: "" names a private temporary database; the handle is kept.
    let opened = unsafe {
        libsqlite3_sys::sqlite3_open_v2(c"".as_ptr(), &mut anchor, flags, std::ptr::null())
    };
    let mut key = [0u8; 32];
    let keyed = opened == libsqlite3_sys::SQLITE_OK
        && aws_lc_rs::rand::fill(&mut key).is_ok()
        && std::ffi::CString::new(format!("PRAGMA key = \"x'{}'\"", hex::encode(key))).is_ok_and(
            |sql| unsafe {
                libsqlite3_sys::sqlite3_exec(
                    anchor,
                    sql.as_ptr(),
                    None,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                ) == libsqlite3_sys::SQLITE_OK
            },
        );
    if !keyed {
        tracing::warn!(
            "SQLCipher's page crypto stays its stock one (its anchor connection did not open)"
        );
        unsafe { libsqlite3_sys::sqlite3_close(anchor) };
        return;
    }
    unsafe {
        let p = sqlcipher_malloc(std::mem::size_of::<Provider>() as u64) as *mut Provider;
        if p.is_null() {
            return;
        }
        sqlcipher_openssl_setup(p);
        let _ = STOCK.set(Stock {
            ctx_init: (*p).ctx_init,
            ctx_free: (*p).ctx_free,
        });
        (*p).hmac = page_hmac;
        (*p).cipher = page_cipher;
        (*p).random = random;
        (*p).ctx_init = ctx_init;
        (*p).ctx_free = ctx_free;
        // Frees the stock provider the anchor's activation made, under
        // SQLCipher's provider mutex, which copying a provider also takes.
        sqlcipher_register_provider(p);
    }
}

/// One connection's scheduled keys: the last of each kind it was given
/// (a connection uses one key, two while it rekeys or copies a database).
#[derive(Default)]
struct Keys {
    hmac: Slot<hmac::Key>,
    encrypt: Slot<EncryptingKey>,
    decrypt: Slot<DecryptingKey>,
}

/// A scheduled key with what it was made from (an algorithm or mode, and
/// a copy of the raw key, wiped when dropped as SQLCipher wipes its own).
type Slot<K> = Option<(c_int, Zeroizing<Vec<u8>>, K)>;

/// The key in `slot` for `kind` and `raw`, made again by `make` only when
/// they changed; `None` when it cannot be made.
fn scheduled<'a, K>(
    slot: &'a mut Slot<K>,
    kind: c_int,
    raw: &[u8],
    make: impl FnOnce() -> Option<K>,
) -> Option<&'a K> {
    if !matches!(slot, Some((k, r, _)) if *k == kind && r.as_slice() == raw) {
        *slot = Some((kind, Zeroizing::new(raw.to_vec()), make()?));
    }
    slot.as_ref().map(|(_, _, key)| key)
}

fn stock() -> Option<(CtxFn, CtxFn)> {
    STOCK.get().map(|s| (s.ctx_init, s.ctx_free))
}

unsafe extern "C" fn ctx_init(ctx: *mut *mut c_void) -> c_int {
    let Some((stock_init, _)) = stock() else {
        return SQLITE_ERROR;
    };
    // SAFETY: SQLCipher passes the address of the connection's provider
    // context; the stock init only counts an activation.
    let rc = unsafe { stock_init(ctx) };
    if rc != SQLITE_OK {
        return rc;
    }
    unsafe { *ctx = Box::into_raw(Box::<Keys>::default()) as *mut c_void };
    SQLITE_OK
}

unsafe extern "C" fn ctx_free(ctx: *mut *mut c_void) -> c_int {
    // SAFETY: `*ctx` is the box `ctx_init` made, or null.
    unsafe {
        if !(*ctx).is_null() {
            drop(Box::from_raw(*ctx as *mut Keys));
            *ctx = std::ptr::null_mut();
        }
    }
    match stock() {
        Some((_, stock_free)) => unsafe { stock_free(ctx) },
        None => SQLITE_OK,
    }
}

unsafe extern "C" fn random(_ctx: *mut c_void, buffer: *mut c_void, length: c_int) -> c_int {
    let Ok(length) = usize::try_from(length) else {
        return SQLITE_ERROR;
    };
    if buffer.is_null() {
        return if length == 0 { SQLITE_OK } else { SQLITE_ERROR };
    }
    // SAFETY: SQLCipher gives a buffer of `length` bytes.
    let buffer = unsafe { std::slice::from_raw_parts_mut(buffer as *mut u8, length) };
    match aws_lc_rs::rand::fill(buffer) {
        Ok(()) => SQLITE_OK,
        Err(_) => SQLITE_ERROR,
    }
}

/// # Safety
/// `ptr` is valid for `len` bytes (or `len` is 0).
unsafe fn bytes<'a>(ptr: *const u8, len: c_int) -> Option<&'a [u8]> {
    let len = usize::try_from(len).ok()?;
    if len == 0 {
        return Some(&[]);
    }
    (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr, len) })
}

unsafe extern "C" fn page_hmac(
    ctx: *mut c_void,
    algorithm: c_int,
    hmac_key: *mut u8,
    key_sz: c_int,
    input: *mut u8,
    in_sz: c_int,
    input2: *mut u8,
    in2_sz: c_int,
    out: *mut u8,
) -> c_int {
    if ctx.is_null() || input.is_null() || out.is_null() {
        return SQLITE_ERROR;
    }
    // SAFETY: SQLCipher gives the context `ctx_init` made (used by one
    // connection, so by one thread at a time) and buffers of the sizes it
    // states; `out` holds the algorithm's tag.
    let keys = unsafe { &mut *(ctx as *mut Keys) };
    let (Some(key), Some(first)) = (unsafe { bytes(hmac_key, key_sz) }, unsafe {
        bytes(input, in_sz)
    }) else {
        return SQLITE_ERROR;
    };
    let second = if input2.is_null() {
        None
    } else {
        match unsafe { bytes(input2, in2_sz) } {
            Some(b) => Some(b),
            None => return SQLITE_ERROR,
        }
    };
    let Some(scheduled) = scheduled(&mut keys.hmac, algorithm, key, || {
        let kind = match algorithm {
            HMAC_SHA1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            HMAC_SHA256 => hmac::HMAC_SHA256,
            HMAC_SHA512 => hmac::HMAC_SHA512,
            _ => return None,
        };
        Some(hmac::Key::new(kind, key))
    }) else {
        return SQLITE_ERROR;
    };
    let mut mac = hmac::Context::with_key(scheduled);
    mac.update(first);
    if let Some(second) = second {
        mac.update(second);
    }
    let tag = mac.sign();
    let tag = tag.as_ref();
    unsafe { std::ptr::copy_nonoverlapping(tag.as_ptr(), out, tag.len()) };
    SQLITE_OK
}

unsafe extern "C" fn page_cipher(
    ctx: *mut c_void,
    mode: c_int,
    key: *mut u8,
    key_sz: c_int,
    iv: *mut u8,
    input: *mut u8,
    in_sz: c_int,
    out: *mut u8,
) -> c_int {
    if ctx.is_null() || iv.is_null() || input.is_null() || out.is_null() || in_sz < 0 {
        return SQLITE_ERROR;
    }
    // SAFETY: as in `page_hmac`; `iv` holds 16 bytes, `input` and `out`
    // `in_sz` each (SQLCipher's page and its buffer, distinct; copied
    // with `copy` in case they are not).
    let keys = unsafe { &mut *(ctx as *mut Keys) };
    let Some(key) = (unsafe { bytes(key, key_sz) }) else {
        return SQLITE_ERROR;
    };
    let mut iv_bytes = [0u8; 16];
    unsafe { std::ptr::copy_nonoverlapping(iv, iv_bytes.as_mut_ptr(), 16) };
    unsafe { std::ptr::copy(input, out, in_sz as usize) };
    let page = unsafe { std::slice::from_raw_parts_mut(out, in_sz as usize) };
    let done = match mode {
        CIPHER_ENCRYPT => scheduled(&mut keys.encrypt, mode, key, || {
            let key = UnboundCipherKey::new(&AES_256, key);
            key.and_then(EncryptingKey::cbc).ok()
        })
        .is_some_and(|scheduled| {
            let context = EncryptionContext::Iv128(FixedLength::from(iv_bytes));
            scheduled.less_safe_encrypt(page, context).is_ok()
        }),
        CIPHER_DECRYPT => scheduled(&mut keys.decrypt, mode, key, || {
            let key = UnboundCipherKey::new(&AES_256, key);
            key.and_then(DecryptingKey::cbc).ok()
        })
        .is_some_and(|scheduled| {
            let context = DecryptionContext::Iv128(FixedLength::from(iv_bytes));
            scheduled.decrypt(page, context).is_ok()
        }),
        _ => false,
    };
    if done {
        SQLITE_OK
    } else {
        SQLITE_ERROR
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::Connection;

    /// The stock provider's functions, as SQLCipher sets them up.
    fn stock_provider() -> Box<Provider> {
        // SAFETY: `sqlcipher_openssl_setup` only fills in function pointers.
        unsafe {
            let mut p: Box<std::mem::MaybeUninit<Provider>> = Box::new_uninit();
            sqlcipher_openssl_setup(p.as_mut_ptr());
            p.assume_init()
        }
    }

    fn with_our_context<T>(f: impl FnOnce(*mut c_void) -> T) -> T {
        let mut keys = Keys::default();
        f(&mut keys as *mut Keys as *mut c_void)
    }

    fn page(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn tag(
        f: HmacFn,
        ctx: *mut c_void,
        algorithm: c_int,
        key: &[u8],
        data: &[u8],
        len: usize,
    ) -> Vec<u8> {
        let (mut key, mut data, mut pgno) = (key.to_vec(), data.to_vec(), [9u8, 0, 0, 0]);
        let mut out = vec![0u8; len];
        // SAFETY: buffers of the sizes given.
        let rc = unsafe {
            f(
                ctx,
                algorithm,
                key.as_mut_ptr(),
                key.len() as c_int,
                data.as_mut_ptr(),
                data.len() as c_int,
                pgno.as_mut_ptr(),
                4,
                out.as_mut_ptr(),
            )
        };
        assert_eq!(rc, SQLITE_OK);
        out
    }

    fn crypt(
        f: CipherFn,
        ctx: *mut c_void,
        mode: c_int,
        key: &[u8],
        iv: &[u8],
        input: &[u8],
    ) -> Vec<u8> {
        let (mut key, mut iv, mut input) = (key.to_vec(), iv.to_vec(), input.to_vec());
        let mut out = vec![0u8; input.len()];
        // SAFETY: buffers of the sizes given.
        let rc = unsafe {
            f(
                ctx,
                mode,
                key.as_mut_ptr(),
                key.len() as c_int,
                iv.as_mut_ptr(),
                input.as_mut_ptr(),
                input.len() as c_int,
                out.as_mut_ptr(),
            )
        };
        assert_eq!(rc, SQLITE_OK);
        out
    }

    #[test]
    fn the_same_tags_as_the_stock_provider_for_every_algorithm() {
        let stock = stock_provider();
        with_our_context(|ctx| {
            for (algorithm, len) in [(HMAC_SHA1, 20), (HMAC_SHA256, 32), (HMAC_SHA512, 64)] {
                // Two keys in turn: the scheduled one is replaced and back.
                for seed in [0u8, 1, 0] {
                    let (key, data) = (page(seed.wrapping_add(7), 32), page(seed, 16_336));
                    let ours = tag(page_hmac, ctx, algorithm, &key, &data, len);
                    let theirs = tag(
                        stock.hmac,
                        std::ptr::null_mut(),
                        algorithm,
                        &key,
                        &data,
                        len,
                    );
                    assert_eq!(ours, theirs, "algorithm {algorithm}, key {seed}");
                }
            }
        });
    }

    #[test]
    fn the_same_pages_as_the_stock_provider_both_ways() {
        let stock = stock_provider();
        let none = std::ptr::null_mut();
        with_our_context(|ctx| {
            for seed in [0u8, 1, 0] {
                let (key, iv) = (
                    page(seed.wrapping_add(11), 32),
                    page(seed.wrapping_add(3), 16),
                );
                let plain = page(seed, 16_320);
                let ours = crypt(page_cipher, ctx, CIPHER_ENCRYPT, &key, &iv, &plain);
                let theirs = crypt(stock.cipher, none, CIPHER_ENCRYPT, &key, &iv, &plain);
                assert_eq!(ours, theirs, "key {seed}");
                assert_ne!(ours, plain);
                assert_eq!(
                    crypt(page_cipher, ctx, CIPHER_DECRYPT, &key, &iv, &theirs),
                    plain
                );
                assert_eq!(
                    crypt(stock.cipher, none, CIPHER_DECRYPT, &key, &iv, &ours),
                    plain
                );
            }
        });
    }

    #[test]
    fn keyed_connections_use_these_functions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = diesel::sqlite::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        let key = crate::db::DatabaseKey::derived_from(
            &crate::crypto::kek::Kek::from_bytes(&[5; 32]).unwrap(),
        );
        crate::db::encryption::apply_key(&mut conn, &key, 1_000).unwrap();
        conn.batch_execute("CREATE TABLE t (x); INSERT INTO t VALUES (1)")
            .unwrap();
        // SAFETY: read while a keyed connection keeps SQLCipher active.
        let provider = unsafe { &*sqlcipher_get_provider() };
        assert_eq!(provider.hmac as usize, page_hmac as HmacFn as usize);
        assert_eq!(provider.cipher as usize, page_cipher as CipherFn as usize);
    }

    #[test]
    fn a_page_of_the_wrong_length_is_an_error_not_a_crash() {
        with_our_context(|ctx| {
            let (mut key, mut iv, mut input, mut out) =
                ([1u8; 32], [2u8; 16], [3u8; 20], [0u8; 20]);
            // SAFETY: buffers of the sizes given.
            let rc = unsafe {
                page_cipher(
                    ctx,
                    CIPHER_ENCRYPT,
                    key.as_mut_ptr(),
                    32,
                    iv.as_mut_ptr(),
                    input.as_mut_ptr(),
                    20,
                    out.as_mut_ptr(),
                )
            };
            assert_eq!(rc, SQLITE_ERROR);
        });
    }
}
