//! List conventions shared by every service (AIP-158): `page_size` defaults to 50 and is
//! clamped to 1000, negative is an error; `page_token` is an opaque keyset cursor (never
//! an offset), here the base64url of the last row's sort key and id.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Error;

/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page; larger requests are clamped to it.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// The effective page size of a request's `page_size`.
pub fn page_size(requested: i32) -> Result<i64, Error> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(Error::invalid("page_size", "must not be negative")),
        n => Ok(i64::from(n).min(MAX_PAGE_SIZE)),
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

/// Position after the last row of a page ordered by `(time DESC, id DESC)` or ascending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Sort key of the last row.
    pub time: DateTime<Utc>,
    /// Id of the last row (tie-breaker).
    pub id: Uuid,
}

impl Cursor {
    /// The opaque token for this position.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.time.timestamp_micros(), self.id))
    }

    /// Parses a request's `page_token`; empty means the first page.
    pub fn decode(token: &str) -> Result<Option<Self>, Error> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || Error::invalid("page_token", "is not a token from a previous response");
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let text = String::from_utf8(raw).map_err(|_| invalid())?;
        let (micros, id) = text.split_once(':').ok_or_else(invalid)?;
        let time = micros
            .parse::<i64>()
            .ok()
            .and_then(DateTime::<Utc>::from_timestamp_micros)
            .ok_or_else(invalid)?;
        Ok(Some(Self {
            time,
            id: Uuid::parse_str(id).map_err(|_| invalid())?,
        }))
    }
}

/// Position after the last row of a page ordered by a time-ordered id (UUIDv7) alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdCursor(pub Uuid);

impl IdCursor {
    /// The opaque token for this position.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }

    /// Parses a request's `page_token`; empty means the first page.
    pub fn decode(token: &str) -> Result<Option<Self>, Error> {
        if token.is_empty() {
            return Ok(None);
        }
        URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| Uuid::from_slice(&bytes).ok())
            .map(|id| Some(Self(id)))
            .ok_or_else(|| Error::invalid("page_token", "is not a token from a previous response"))
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
        let cursor = Cursor {
            time: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), Some(cursor));
        assert_eq!(Cursor::decode("").unwrap(), None);
        for bad in ["!!!", "bm9wZQ", "MTp4"] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
            assert!(IdCursor::decode(bad).is_err(), "{bad}");
        }
        let id = IdCursor(Uuid::now_v7());
        assert_eq!(IdCursor::decode(&id.encode()).unwrap(), Some(id));
    }
}
