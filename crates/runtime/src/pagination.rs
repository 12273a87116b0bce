//! List conventions shared by every service (AIP-158): `page_size` defaults to 50 and is
//! clamped to 1000, negative is an error; `page_token` is an opaque keyset cursor (never
//! an offset): the base64url of the last row's sort key and id, followed by a fingerprint
//! of the list, caller and filters it belongs to ([`PageContext`]).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use strata_errors::ApiError;

/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page; larger requests are clamped to it.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// The effective page size of a request's `page_size`.
pub fn page_size(requested: i32) -> Result<i64, ApiError> {
    page_size_within(requested, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
}

/// The effective page size of a list with its own default and maximum (rankings and
/// statistics, whose rows are costlier).
pub fn page_size_within(requested: i32, default: i64, max: i64) -> Result<i64, ApiError> {
    match requested {
        0 => Ok(default),
        n if n < 0 => Err(ApiError::invalid("page_size", "must not be negative")),
        n => Ok(i64::from(n).min(max)),
    }
}

/// Cuts `rows`, fetched with `limit + 1`, to one page and returns it with the token of
/// the next page (empty on the last page), made from the last row by `cursor`.
pub fn finish_page<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor: impl Fn(&T) -> String,
) -> (Vec<T>, String) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = match rows.last() {
        Some(last) if more => cursor(last),
        _ => String::new(),
    };
    (rows, next)
}

fn not_a_token() -> ApiError {
    ApiError::invalid("page_token", "is not a token from a previous response")
}

/// What a page token is bound to: the list RPC, the caller, and the filters of the request
/// that produced it. A token presented with anything else is refused (`INVALID_ARGUMENT`),
/// rather than silently paging through a different list from the wrong place. The binding
/// is a fingerprint, not a secret: what a caller may see is decided by the query, never by
/// the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageContext([u8; FINGERPRINT_LEN]);

const FINGERPRINT_LEN: usize = 8;

impl PageContext {
    /// The context of `list` (the RPC's full name) called by `caller` with `filters` (every
    /// request field that selects or orders rows, rendered as text; `page_size` excluded).
    pub fn new(list: &str, caller: &Uuid, filters: &[&str]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(list.as_bytes());
        hasher.update([0]);
        hasher.update(caller.as_bytes());
        for filter in filters {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            hasher.update((filter.len() as u64).to_be_bytes());
            hasher.update(filter.as_bytes());
        }
        let digest = hasher.finalize();
        let mut fingerprint = [0u8; FINGERPRINT_LEN];
        fingerprint.copy_from_slice(&digest[..FINGERPRINT_LEN]);
        Self(fingerprint)
    }

    fn seal(&self, position: &[u8]) -> String {
        let mut bytes = Vec::with_capacity(position.len() + FINGERPRINT_LEN);
        bytes.extend_from_slice(position);
        bytes.extend_from_slice(&self.0);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The position inside `token` (`len` bytes, or any length up to
    /// [`MAX_KEY_BYTES`] when `None`), if the token is well-formed and was made for this
    /// context.
    fn open(&self, token: &str, len: impl Into<Option<usize>>) -> Result<Vec<u8>, ApiError> {
        let wanted = len.into();
        if token.len() > (MAX_KEY_BYTES + FINGERPRINT_LEN) * 4 / 3 + 4 {
            return Err(not_a_token());
        }
        let mut bytes = URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .filter(|b| match wanted {
                Some(len) => b.len() == len + FINGERPRINT_LEN,
                None => b.len() >= FINGERPRINT_LEN,
            })
            .ok_or_else(not_a_token)?;
        let len = bytes.len() - FINGERPRINT_LEN;
        if bytes[len..] != self.0 {
            return Err(ApiError::invalid(
                "page_token",
                "was issued for another list, caller or filter; repeat the request that \
                 produced it, or start again without a token",
            ));
        }
        bytes.truncate(len);
        Ok(bytes)
    }
}

/// Position after the last row of a page ordered by `(time DESC, id DESC)` or ascending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Sort key of the last row.
    pub time: DateTime<Utc>,
    /// Id of the last row (tie-breaker).
    pub id: Uuid,
}

impl Cursor {
    /// The opaque token for this position in the list of `context`.
    pub fn encode(&self, context: &PageContext) -> String {
        let mut position = [0u8; 24];
        position[..8].copy_from_slice(&self.time.timestamp_micros().to_be_bytes());
        position[8..].copy_from_slice(self.id.as_bytes());
        context.seal(&position)
    }

    /// Parses a request's `page_token` for the list of `context`; empty means the first
    /// page.
    pub fn decode(token: &str, context: &PageContext) -> Result<Option<Self>, ApiError> {
        if token.is_empty() {
            return Ok(None);
        }
        let position = context.open(token, 24)?;
        let micros = i64::from_be_bytes(position[..8].try_into().unwrap_or_default());
        let time = DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(not_a_token)?;
        Ok(Some(Self {
            time,
            id: Uuid::from_slice(&position[8..]).unwrap_or_default(),
        }))
    }
}

/// Position after the last row of a page ordered by a time-ordered id (UUIDv7) alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdCursor(pub Uuid);

impl IdCursor {
    /// The opaque token for this position in the list of `context`.
    pub fn encode(&self, context: &PageContext) -> String {
        context.seal(self.0.as_bytes())
    }

    /// Parses a request's `page_token` for the list of `context`; empty means the first
    /// page.
    pub fn decode(token: &str, context: &PageContext) -> Result<Option<Self>, ApiError> {
        if token.is_empty() {
            return Ok(None);
        }
        let position = context.open(token, 16)?;
        Ok(Some(Self(Uuid::from_slice(&position).unwrap_or_default())))
    }
}

/// Longest position a [`KeyCursor`] holds.
pub const MAX_KEY_BYTES: usize = 1024;

/// Position after the last row of a page ordered by other keys (a ranking's value and
/// name, a statistic and an id): the keys in order, each self-delimiting. Build it with
/// the `push_*` methods and read it back in the same order with [`KeyCursor::reader`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyCursor(Vec<u8>);

impl KeyCursor {
    /// Appends an integer key.
    pub fn push_i64(mut self, value: i64) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// Appends a floating-point key.
    pub fn push_f64(self, value: f64) -> Self {
        self.push_i64(value.to_bits() as i64)
    }

    /// Appends an id key.
    pub fn push_uuid(mut self, value: &Uuid) -> Self {
        self.0.extend_from_slice(value.as_bytes());
        self
    }

    /// Appends a text key (cut at [`MAX_KEY_BYTES`], which no sort key comes near).
    pub fn push_str(mut self, value: &str) -> Self {
        let bytes = &value.as_bytes()[..value.len().min(MAX_KEY_BYTES / 2)];
        self.0
            .extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(0).to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    /// The opaque token for this position in the list of `context`.
    pub fn encode(&self, context: &PageContext) -> String {
        context.seal(&self.0)
    }

    /// Parses a request's `page_token` for the list of `context`; empty means the first
    /// page.
    pub fn decode(token: &str, context: &PageContext) -> Result<Option<Self>, ApiError> {
        if token.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self(context.open(token, None)?)))
    }

    /// Reads the keys back, in the order they were pushed.
    pub fn reader(&self) -> KeyReader<'_> {
        KeyReader(&self.0)
    }
}

/// Reads a [`KeyCursor`]'s keys; a token that does not hold what the list expects is
/// `INVALID_ARGUMENT` on `page_token`.
#[derive(Debug)]
pub struct KeyReader<'a>(&'a [u8]);

impl KeyReader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ApiError> {
        if self.0.len() < n {
            return Err(not_a_token());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// The next integer key.
    pub fn i64(&mut self) -> Result<i64, ApiError> {
        let bytes: [u8; 8] = self.take(8)?.try_into().map_err(|_| not_a_token())?;
        Ok(i64::from_be_bytes(bytes))
    }

    /// The next floating-point key (finite only).
    pub fn f64(&mut self) -> Result<f64, ApiError> {
        let value = f64::from_bits(self.i64()? as u64);
        if value.is_finite() {
            Ok(value)
        } else {
            Err(not_a_token())
        }
    }

    /// The next id key.
    pub fn uuid(&mut self) -> Result<Uuid, ApiError> {
        Uuid::from_slice(self.take(16)?).map_err(|_| not_a_token())
    }

    /// The next text key.
    pub fn str(&mut self) -> Result<String, ApiError> {
        let len: [u8; 2] = self.take(2)?.try_into().map_err(|_| not_a_token())?;
        let bytes = self.take(usize::from(u16::from_be_bytes(len)))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| not_a_token())
    }

    /// Refuses a token with keys left over.
    pub fn end(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(not_a_token())
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_clamp_and_refuse_negatives() {
        assert_eq!(page_size(0).unwrap(), 50);
        assert_eq!(page_size(7).unwrap(), 7);
        assert_eq!(page_size(5000).unwrap(), 1000);
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn pages_are_cut_and_tokens_only_given_when_more_rows_exist() {
        let (rows, next) = finish_page(vec![1, 2, 3], 2, |n| format!("after {n}"));
        assert_eq!((rows, next.as_str()), (vec![1, 2], "after 2"));
        let (rows, next) = finish_page(vec![1, 2], 2, |n| format!("after {n}"));
        assert_eq!((rows, next.as_str()), (vec![1, 2], ""));
        let (rows, next) = finish_page(Vec::<i32>::new(), 2, |n| format!("after {n}"));
        assert!(rows.is_empty() && next.is_empty());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let me = Uuid::now_v7();
        let context = PageContext::new("svc/List", &me, &["a"]);
        let cursor = Cursor {
            time: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(
            Cursor::decode(&cursor.encode(&context), &context).unwrap(),
            Some(cursor)
        );
        assert_eq!(Cursor::decode("", &context).unwrap(), None);
        for bad in ["!!!", "bm9wZQ", "MTp4", &"A".repeat(43)] {
            assert!(Cursor::decode(bad, &context).is_err(), "{bad}");
            assert!(IdCursor::decode(bad, &context).is_err(), "{bad}");
        }
        let id = IdCursor(Uuid::now_v7());
        assert_eq!(
            IdCursor::decode(&id.encode(&context), &context).unwrap(),
            Some(id)
        );
    }

    #[test]
    fn key_cursors_round_trip_and_refuse_what_they_do_not_hold() {
        let context = PageContext::new("svc/Rank", &Uuid::nil(), &["a"]);
        let id = Uuid::now_v7();
        let token = KeyCursor::default()
            .push_f64(12.5)
            .push_i64(-7)
            .push_str("gpt-4o")
            .push_uuid(&id)
            .encode(&context);
        let cursor = KeyCursor::decode(&token, &context).unwrap().unwrap();
        let mut keys = cursor.reader();
        assert_eq!(keys.f64().unwrap(), 12.5);
        assert_eq!(keys.i64().unwrap(), -7);
        assert_eq!(keys.str().unwrap(), "gpt-4o");
        assert_eq!(keys.uuid().unwrap(), id);
        keys.end().unwrap();
        let no_id = KeyCursor::decode(&KeyCursor::default().push_i64(1).encode(&context), &context)
            .unwrap()
            .unwrap();
        assert!(no_id.reader().uuid().is_err());
        let mut short = cursor.reader();
        short.f64().unwrap();
        assert!(short.end().is_err());
        let other = PageContext::new("svc/Rank", &Uuid::nil(), &["b"]);
        assert!(KeyCursor::decode(&token, &other).is_err());
        assert!(KeyCursor::decode(&"A".repeat(5000), &context).is_err());
    }

    #[test]
    fn tokens_work_only_in_their_context() {
        let me = Uuid::now_v7();
        let token = IdCursor(Uuid::now_v7()).encode(&PageContext::new("svc/List", &me, &["a"]));
        let others = [
            PageContext::new("svc/Other", &me, &["a"]),
            PageContext::new("svc/List", &Uuid::now_v7(), &["a"]),
            PageContext::new("svc/List", &me, &["b"]),
            PageContext::new("svc/List", &me, &["a", ""]),
            PageContext::new("svc/List", &me, &[]),
        ];
        for other in others {
            let err = IdCursor::decode(&token, &other).unwrap_err();
            assert!(err.to_string().contains("another list"), "{err}");
        }
        assert_ne!(
            PageContext::new("l", &me, &["ab", "c"]),
            PageContext::new("l", &me, &["a", "bc"])
        );
    }
}
