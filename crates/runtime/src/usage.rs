//! The rules an LLM call's usage obeys wherever it enters the suite: analytics'
//! `RecordUsage` and content's messages (whose usage content ships to analytics, so that
//! what content accepted analytics never refuses).

/// Longest model name, in characters.
pub const MAX_MODEL_CHARS: usize = 100;
/// Longest provider name.
pub const MAX_PROVIDER_LEN: usize = 50;
/// Most tokens of one kind in one call.
pub const MAX_TOKENS: i64 = 100_000_000;
/// Largest cost of one call, in US dollars.
pub const MAX_COST_DOLLARS: u64 = 1_000_000;
/// Most decimal places of a cost (the columns are `numeric(20, 10)`).
pub const MAX_COST_SCALE: usize = 10;

/// Checks a model name: 1 to [`MAX_MODEL_CHARS`] characters after trimming, no control
/// characters. Returns it trimmed.
pub fn check_model(value: &str) -> Result<&str, String> {
    let model = value.trim();
    if model.is_empty() || model.chars().count() > MAX_MODEL_CHARS {
        return Err(format!("must be 1 to {MAX_MODEL_CHARS} characters"));
    }
    if model.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(model)
}

/// Checks a provider name: 1 to [`MAX_PROVIDER_LEN`] lowercase letters, digits, '-', '_'
/// or '.'.
pub fn check_provider(value: &str) -> Result<&str, String> {
    let valid =
        |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.');
    if value.is_empty() || value.len() > MAX_PROVIDER_LEN || !value.bytes().all(valid) {
        return Err(format!(
            "must be 1 to {MAX_PROVIDER_LEN} lowercase letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(value)
}

/// Checks a token count: 0 to [`MAX_TOKENS`].
pub fn check_tokens(value: i64) -> Result<i64, String> {
    if value < 0 {
        return Err("must not be negative".into());
    }
    if value > MAX_TOKENS {
        return Err(format!("must be at most {MAX_TOKENS}"));
    }
    Ok(value)
}

/// Checks a cost: plain decimal text, 0 to [`MAX_COST_DOLLARS`], at most
/// [`MAX_COST_SCALE`] decimal places. Returns the text PostgreSQL will parse.
pub fn check_cost(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("is required".into());
    }
    if value.starts_with('-') {
        return Err("must not be negative".into());
    }
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (value.contains('.') && frac.is_empty()) {
        return Err("must be a decimal number like \"0.00125\"".into());
    }
    if frac.len() > MAX_COST_SCALE {
        return Err(format!("must have at most {MAX_COST_SCALE} decimal places"));
    }
    let int_trimmed = int.trim_start_matches('0');
    let whole: u64 = if int_trimmed.is_empty() {
        0
    } else if int_trimmed.len() > 7 {
        u64::MAX
    } else {
        int_trimmed.parse().unwrap_or(u64::MAX)
    };
    let fraction_zero = frac.bytes().all(|b| b == b'0');
    if whole > MAX_COST_DOLLARS || (whole == MAX_COST_DOLLARS && !fraction_zero) {
        return Err(format!("must be at most {MAX_COST_DOLLARS}"));
    }
    Ok(value.to_owned())
}
