//! Access-token verification against forgeries, key rotation, and secrets kept out of logs.

use super::*;

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = Text)]
    kid: String,
    #[diesel(sql_type = Bytea)]
    private_key: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    kek_id: Option<String>,
}

fn claims_for(user: &str, session: &str) -> AccessClaims {
    let now = Utc::now().timestamp();
    AccessClaims {
        iss: "strata-auth".into(),
        aud: "strata".into(),
        sub: user.into(),
        sid: session.into(),
        role: Role::Admin,
        iat: now,
        nbf: now,
        exp: now + 300,
        jti: "test".into(),
    }
}

#[tokio::test]
async fn verify_token_refuses_every_forgery() {
    let mut h = start().await;
    let (user, credentials) = sign_up(&mut h.client, "ada@example.com").await;
    let verified = h
        .client
        .verify_token(pb::VerifyTokenRequest {
            token: credentials.access_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .principal
        .unwrap();
    assert_eq!(
        (verified.user_id.as_str(), verified.session_id.as_str()),
        (user.id.as_str(), credentials.session_id.as_str())
    );
    assert_eq!(verified.role, i32::from(pb::Role::User));
    assert_eq!(verified.kind, i32::from(pb::CredentialKind::AccessToken));

    let jwks = h
        .client
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(jwks.len(), 1);
    assert_eq!(
        (
            jwks[0].kty.as_str(),
            jwks[0].crv.as_str(),
            jwks[0].alg.as_str()
        ),
        ("OKP", "Ed25519", "EdDSA")
    );
    let header = jsonwebtoken::decode_header(&credentials.access_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(jwks[0].kid.as_str()));
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));

    let keys: Vec<KeyRow> =
        diesel::sql_query("SELECT kid, private_key, kek_id FROM auth.signing_keys")
            .load(&mut h.db.connect().await)
            .await
            .unwrap();
    // The seed as only the auth service (holding the key-encryption key) can open it.
    let seed = AuthConfig::default()
        .key_encryption
        .open(
            &keys[0].kid,
            keys[0].kek_id.as_deref(),
            &keys[0].private_key,
        )
        .unwrap();
    let signer = signer_from_seed(&keys[0].kid, &seed);
    let sign = |header: &Header, claims: &AccessClaims, key: &EncodingKey| {
        jsonwebtoken::encode(header, claims, key).unwrap()
    };
    let eddsa = |typ: Option<&str>, kid: Option<&str>| {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = typ.map(str::to_owned);
        header.kid = kid.map(str::to_owned);
        header
    };
    let good = claims_for(&user.id, &credentials.session_id);
    // Sanity: a token forged with the real key and good claims is accepted, so each
    // refusal below is due to the one thing it changes.
    let control = sign(
        &eddsa(Some("at+jwt"), Some(&signer.kid)),
        &good,
        &signer.key,
    );
    h.client
        .verify_token(pb::VerifyTokenRequest { token: control })
        .await
        .unwrap();

    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let claims_json = serde_json_like(&good);
    let mut forgeries: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none","typ":"at+jwt"}"#),
                b64(&claims_json)
            ),
        ),
        (
            "HS256 with the public key as secret",
            sign(
                &{
                    let mut header = Header::new(Algorithm::HS256);
                    header.typ = Some("at+jwt".into());
                    header.kid = Some(signer.kid.clone());
                    header
                },
                &good,
                &EncodingKey::from_secret(jwks[0].x.as_bytes()),
            ),
        ),
        (
            "unknown kid",
            sign(&eddsa(Some("at+jwt"), Some("nope")), &good, &signer.key),
        ),
        (
            "no kid",
            sign(&eddsa(Some("at+jwt"), None), &good, &signer.key),
        ),
        (
            "wrong typ",
            sign(&eddsa(Some("JWT"), Some(&signer.kid)), &good, &signer.key),
        ),
        (
            "jku header",
            sign(
                &{
                    let mut header = eddsa(Some("at+jwt"), Some(&signer.kid));
                    header.jku = Some("https://attacker.invalid/jwks".into());
                    header
                },
                &good,
                &signer.key,
            ),
        ),
        (
            "x5u header",
            sign(
                &{
                    let mut header = eddsa(Some("at+jwt"), Some(&signer.kid));
                    header.x5u = Some("https://attacker.invalid/cert".into());
                    header
                },
                &good,
                &signer.key,
            ),
        ),
        (
            "refresh token as access token",
            credentials.refresh_token.clone(),
        ),
        ("api key shape", "sk_live_abcdef".into()),
        ("garbage", "not.a.jwt".into()),
    ];
    let with = |f: &dyn Fn(&mut AccessClaims)| {
        let mut claims = good.clone();
        f(&mut claims);
        sign(
            &eddsa(Some("at+jwt"), Some(&signer.kid)),
            &claims,
            &signer.key,
        )
    };
    forgeries.push(("expired", with(&|c| c.exp = Utc::now().timestamp() - 60)));
    forgeries.push((
        "not yet valid",
        with(&|c| c.nbf = Utc::now().timestamp() + 600),
    ));
    forgeries.push(("wrong issuer", with(&|c| c.iss = "someone-else".into())));
    forgeries.push(("wrong audience", with(&|c| c.aud = "other-app".into())));
    let other_key = signer_from_seed(&signer.kid, &[7u8; 32]);
    forgeries.push((
        "signed by another key",
        sign(
            &eddsa(Some("at+jwt"), Some(&signer.kid)),
            &good,
            &other_key.key,
        ),
    ));
    let mut tampered = credentials.access_token.clone();
    tampered.pop();
    tampered.push(if credentials.access_token.ends_with('A') {
        'B'
    } else {
        'A'
    });
    forgeries.push(("tampered signature", tampered));

    for (name, token) in forgeries {
        let status = h
            .client
            .verify_token(pb::VerifyTokenRequest { token })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
    }
}

/// The claims as JSON, without pulling serde_json into the test's dependencies.
fn serde_json_like(c: &AccessClaims) -> String {
    format!(
        r#"{{"iss":"{}","aud":"{}","sub":"{}","sid":"{}","role":"ADMIN","iat":{},"nbf":{},"exp":{},"jti":"{}"}}"#,
        c.iss, c.aud, c.sub, c.sid, c.iat, c.nbf, c.exp, c.jti
    )
}

#[tokio::test]
async fn rotated_keys_keep_old_tokens_valid_and_sign_new_ones() {
    let mut h = start().await;
    let (_, before) = sign_up(&mut h.client, "ada@example.com").await;
    let old_kid = jsonwebtoken::decode_header(&before.access_token)
        .unwrap()
        .kid
        .unwrap();
    h.handlers.rotate_keys().await.unwrap();
    let jwks = h
        .client
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(jwks.len(), 2, "the retired key stays published");
    assert_ne!(jwks[0].kid, old_kid, "current key first");
    h.client
        .verify_token(pb::VerifyTokenRequest {
            token: before.access_token.clone(),
        })
        .await
        .unwrap();
    let after = refresh(&mut h.client, &before.refresh_token).await.unwrap();
    let new_kid = jsonwebtoken::decode_header(&after.access_token)
        .unwrap()
        .kid
        .unwrap();
    assert_eq!(new_kid, jwks[0].kid);
}

#[tokio::test(flavor = "current_thread")]
async fn no_password_token_or_hash_reaches_the_logs() {
    let capture = LogCapture::default();
    let _guard = tracing::subscriber::set_default(capture.subscriber(tracing::Level::TRACE));

    let mut h = start().await;
    let (_, credentials) = sign_up(&mut h.client, "ada@example.com").await;
    let _ = h
        .client
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: "wrong horse battery staple".into(),
        })
        .await;
    let second = refresh(&mut h.client, &credentials.refresh_token)
        .await
        .unwrap();
    let _ = refresh(&mut h.client, &credentials.refresh_token).await;
    let _ = h
        .client
        .get_profile(bearer(
            pb::GetProfileRequest::default(),
            &second.access_token,
        ))
        .await;

    let log = capture.text();
    assert!(log.contains("signed up"), "the capture works: {log}");
    for secret in [
        PASSWORD,
        "wrong horse battery staple",
        credentials.access_token.as_str(),
        credentials.refresh_token.as_str(),
        second.refresh_token.as_str(),
        "$argon2id$",
    ] {
        assert!(!log.contains(secret), "{secret} leaked into the logs");
    }
}
