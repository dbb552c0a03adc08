//! RFC 8555 protocol and negative tests for the ACME server: the router is driven
//! in-process over a fake backend, with hand-made JWS requests, so every check the server
//! must make on the wire (nonces, URLs, signatures, algorithms, key forms, content type,
//! size, account/order/authorization rules, finalize, revocation, deactivation, key
//! change) can be broken on purpose.

mod support;

use axum::http::Method;
use serde_json::{json, Value};
use support::{b64, csr, payload_text, Account, Key, Lab, Signer};

/// Order with one IP identifier; validated over http-01 against the loopback responder.
const IP: &str = "127.0.0.1";

// ---------------------------------------------------------------------------------------
// Nonces (§6.5)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn replayed_nonce_is_bad_nonce_and_the_error_carries_a_fresh_nonce() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    let url = lab.url("new-order");
    let payload = json!({"identifiers": [{"type": "dns", "value": "www.example.test"}]});
    let jws = lab.jws(&url, Some(&payload), Signer::Kid(&account)).await;
    lab.post_jws(&url, &jws).await.expect(201);

    let replay = lab.post_jws(&url, &jws).await;
    replay.problem(400, "badNonce");
    let fresh = replay.nonce();
    assert_eq!(
        lab.order_list(&account).await.len(),
        1,
        "the replay made an order"
    );

    // The nonce handed out with the error is good for the retry.
    let retry = Signer::Kid(&account);
    let mut header = lab.protected(&url, retry).await;
    header["nonce"] = json!(fresh);
    let jws = account.key.sign(&header, &payload_text(Some(&payload)));
    lab.post_jws(&url, &jws).await.expect(201);
}

/// RFC 8555 §6.5: newNonce (GET and HEAD) hands out nonces; the directory GET carries
/// none, as with Boulder (a client that does not expect one there may fail on it).
#[tokio::test]
async fn nonces_come_from_new_nonce_and_posts_not_from_the_directory() {
    let lab = Lab::start().await;
    for method in [Method::GET, Method::HEAD] {
        let reply = lab
            .send(method.clone(), &lab.url("new-nonce"), None, String::new())
            .await;
        assert!(reply.status.is_success(), "{method}: {}", reply.status);
        reply.nonce();
    }
    let reply = lab
        .send(Method::GET, &lab.url("directory"), None, String::new())
        .await;
    reply.expect(200);
    assert_eq!(reply.header("replay-nonce"), None);
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
}

#[tokio::test]
async fn missing_and_unknown_nonces_are_bad_nonce() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    let url = lab.url("new-order");
    let payload = json!({"identifiers": [{"type": "dns", "value": "www.example.test"}]});

    let missing = lab
        .jws_with(&url, Some(&payload), Signer::Kid(&account), |h| {
            h.as_object_mut().unwrap().remove("nonce");
        })
        .await;
    let reply = lab.post_jws(&url, &missing).await;
    reply.problem(400, "badNonce");
    reply.nonce();

    let unknown = lab
        .jws_with(&url, Some(&payload), Signer::Kid(&account), |h| {
            h["nonce"] = json!(b64([7u8; 16]));
        })
        .await;
    let reply = lab.post_jws(&url, &unknown).await;
    reply.problem(400, "badNonce");
    reply.nonce();

    assert!(lab.order_list(&account).await.is_empty());
}

// ---------------------------------------------------------------------------------------
// JWS framing (§6.2, §6.4)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn jws_url_other_than_the_request_url_is_unauthorized() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    let url = lab.url("new-order");
    let payload = json!({"identifiers": [{"type": "dns", "value": "www.example.test"}]});
    for signed_for in [
        "https://elsewhere.example/acme/default/new-order".to_string(),
        lab.url("new-account"),
        format!("{url}?x=1"),
    ] {
        let jws = lab
            .jws_with(&url, Some(&payload), Signer::Kid(&account), |h| {
                h["url"] = json!(signed_for)
            })
            .await;
        lab.post_jws(&url, &jws).await.problem(403, "unauthorized");
    }
    assert!(lab.order_list(&account).await.is_empty());
}

#[tokio::test]
async fn tampered_signature_or_payload_is_malformed() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    let url = lab.url("new-order");
    let payload = json!({"identifiers": [{"type": "dns", "value": "www.example.test"}]});

    let mut jws = lab.jws(&url, Some(&payload), Signer::Kid(&account)).await;
    let mut signature = base64_decode(&jws["signature"]);
    signature[10] ^= 0x01;
    jws["signature"] = json!(b64(signature));
    lab.post_jws(&url, &jws).await.problem(400, "malformed");

    let mut jws = lab.jws(&url, Some(&payload), Signer::Kid(&account)).await;
    let other = json!({"identifiers": [{"type": "dns", "value": "evil.example.test"}]});
    jws["payload"] = json!(payload_text(Some(&other)));
    lab.post_jws(&url, &jws).await.problem(400, "malformed");

    // newAccount (jwk) too: a tampered payload creates nothing.
    let key = Key::generate();
    let new_account = lab.url("new-account");
    let mut jws = lab
        .jws(&new_account, Some(&json!({})), Signer::Jwk(&key))
        .await;
    jws["payload"] = json!(payload_text(Some(
        &json!({"contact": ["mailto:a@b.example"]})
    )));
    lab.post_jws(&new_account, &jws)
        .await
        .problem(400, "malformed");
    lab.post(
        &new_account,
        Some(&json!({"onlyReturnExisting": true})),
        Signer::Jwk(&key),
    )
    .await
    .problem_of_type("accountDoesNotExist");

    assert!(lab.order_list(&account).await.is_empty());
}

#[tokio::test]
async fn alg_none_and_hmac_are_bad_signature_algorithm() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    let url = lab.url("new-order");
    let payload = payload_text(Some(
        &json!({"identifiers": [{"type": "dns", "value": "a.example.test"}]}),
    ));

    // alg none: no signature at all.
    let mut header = lab.protected(&url, Signer::Kid(&account)).await;
    header["alg"] = json!("none");
    let jws = json!({"protected": b64(header.to_string()), "payload": payload, "signature": ""});
    check_bad_alg(&lab.post_jws(&url, &jws).await);

    // HS256 keyed with the account's public key (the classic key-confusion attack).
    let mut header = lab.protected(&url, Signer::Kid(&account)).await;
    header["alg"] = json!("HS256");
    let protected = b64(header.to_string());
    let signer = josekit::jws::HS256
        .signer_from_bytes(account.key.spki_der())
        .unwrap();
    let signature =
        josekit::jws::JwsSigner::sign(&signer, format!("{protected}.{payload}").as_bytes())
            .unwrap();
    let jws = json!({"protected": protected, "payload": payload, "signature": b64(signature)});
    check_bad_alg(&lab.post_jws(&url, &jws).await);

    assert!(lab.order_list(&account).await.is_empty());
}

fn check_bad_alg(reply: &support::Reply) {
    let problem = reply.problem(400, "badSignatureAlgorithm");
    let algorithms: Vec<&str> = problem["algorithms"]
        .as_array()
        .expect("an `algorithms` list")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(algorithms.contains(&"ES256"), "{algorithms:?}");
    assert!(
        !algorithms
            .iter()
            .any(|a| *a == "none" || a.starts_with("HS")),
        "{algorithms:?}"
    );
    reply.nonce();
}

#[tokio::test]
async fn jwk_on_kid_endpoints_and_kid_on_new_account_are_malformed() {
    let lab = Lab::start().await;
    let account = lab.account().await;

    let new_order = lab.url("new-order");
    let payload = json!({"identifiers": [{"type": "dns", "value": "www.example.test"}]});
    lab.post(&new_order, Some(&payload), Signer::Jwk(&account.key))
        .await
        .problem(400, "malformed");
    // POST-as-GET of the account by jwk: also kid-only.
    lab.post(&account.url, None, Signer::Jwk(&account.key))
        .await
        .problem(400, "malformed");

    let new_account = lab.url("new-account");
    lab.post(
        &new_account,
        Some(&json!({"termsOfServiceAgreed": true})),
        Signer::Kid(&account),
    )
    .await
    .problem(400, "malformed");

    // Both at once (§6.2: mutually exclusive).
    let both = lab
        .jws_with(&new_order, Some(&payload), Signer::Kid(&account), |h| {
            h["jwk"] = account.key.jwk()
        })
        .await;
    lab.post_jws(&new_order, &both)
        .await
        .problem(400, "malformed");

    assert!(lab.order_list(&account).await.is_empty());
}

#[tokio::test]
async fn unknown_account_url_as_kid_is_account_does_not_exist() {
    let lab = Lab::start().await;
    let url = lab.url("new-order");
    let payload = json!({"identifiers": [{"type": "dns", "value": "www.example.test"}]});
    for kid in [
        lab.url("account/no-such-account"),
        "https://elsewhere.example/acme/default/account/x".to_string(),
    ] {
        let ghost = Account {
            key: Key::generate(),
            url: kid,
        };
        let reply = lab.post(&url, Some(&payload), Signer::Kid(&ghost)).await;
        // RFC 8555 sets no status for this case; any client error will do.
        assert!(
            matches!(reply.status.as_u16(), 400 | 403),
            "{}",
            reply.status
        );
        reply.problem_of_type("accountDoesNotExist");
        reply.nonce();
    }
}

#[tokio::test]
async fn wrong_content_type_is_415_malformed() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    let url = lab.url("new-order");
    let payload = json!({"identifiers": [{"type": "dns", "value": "www.example.test"}]});
    for content_type in [Some("application/json"), Some("text/plain"), None] {
        let jws = lab.jws(&url, Some(&payload), Signer::Kid(&account)).await;
        let reply = lab
            .send(Method::POST, &url, content_type, jws.to_string())
            .await;
        reply.problem(415, "malformed");
    }
    assert!(lab.order_list(&account).await.is_empty());
}

/// RFC 8555 §6.2: requests "MUST have the Content-Type header field set to
/// application/jose+json"; otherwise 415. Another media type that merely starts with
/// that text is not it.
#[tokio::test]
async fn content_type_with_the_right_prefix_only_is_415() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    let url = lab.url("new-order");
    let payload = json!({"identifiers": [{"type": "dns", "value": "www.example.test"}]});
    let jws = lab.jws(&url, Some(&payload), Signer::Kid(&account)).await;
    lab.send(
        Method::POST,
        &url,
        Some("application/jose+jsonx"),
        jws.to_string(),
    )
    .await
    .problem(415, "malformed");
    assert!(lab.order_list(&account).await.is_empty());
}

/// RFC 8555 §6.3: a plain GET of a resource that needs POST(-as-GET) is 405 with `Allow`,
/// and (like every error here) a problem document carrying a fresh nonce; a path that is no
/// resource at all is 404.
#[tokio::test]
async fn wrong_methods_are_405_problems_with_allow_and_unknown_paths_404() {
    let lab = Lab::start().await;
    for (method, path, allowed) in [
        (Method::GET, "new-order", "POST"),
        (Method::GET, "new-account", "POST"),
        (Method::PUT, "directory", "GET,HEAD"),
        (Method::DELETE, "new-nonce", "GET,HEAD"),
    ] {
        let reply = lab
            .send(method.clone(), &lab.url(path), None, String::new())
            .await;
        let problem = reply.problem(405, "malformed");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains(method.as_str()),
            "{problem}"
        );
        assert_eq!(
            reply.header("allow").as_deref(),
            Some(allowed),
            "{method} {path}"
        );
        // A nonce on every answer but a plain GET's (RFC 8555 §6.5, as Boulder).
        assert_eq!(
            reply.header("replay-nonce").is_some(),
            method != Method::GET,
            "{method} {path}"
        );
    }
    lab.send(Method::GET, &lab.url("no-such-thing"), None, String::new())
        .await
        .problem(404, "malformed");
}

#[tokio::test]
async fn body_over_64_kib_is_413() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    let url = lab.url("new-order");
    // A correctly signed JWS whose payload alone is 70 KiB.
    let payload = json!({"identifiers": [{"type": "dns", "value": "www.example.test"}], "pad": "x".repeat(70 * 1024)});
    let jws = lab.jws(&url, Some(&payload), Signer::Kid(&account)).await;
    let reply = lab.post_jws(&url, &jws).await;
    reply.problem(413, "malformed");
    reply.nonce();
    assert!(lab.order_list(&account).await.is_empty());
}

// ---------------------------------------------------------------------------------------
// Accounts (§7.3)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn new_account_twice_with_the_same_key_returns_the_same_account() {
    let lab = Lab::start().await;
    let key = Key::generate();
    let url = lab.url("new-account");
    let payload = json!({"termsOfServiceAgreed": true, "contact": ["mailto:ops@example.test"]});
    let first = lab.post(&url, Some(&payload), Signer::Jwk(&key)).await;
    first.expect(201);
    let second = lab.post(&url, Some(&payload), Signer::Jwk(&key)).await;
    let body = second.expect(200);
    assert_eq!(first.location(), second.location());
    assert_eq!(body["status"], "valid");
    assert_eq!(body["contact"], json!(["mailto:ops@example.test"]));

    // onlyReturnExisting finds it too.
    let found = lab
        .post(
            &url,
            Some(&json!({"onlyReturnExisting": true})),
            Signer::Jwk(&key),
        )
        .await;
    found.expect(200);
    assert_eq!(found.location(), first.location());
}

#[tokio::test]
async fn only_return_existing_with_an_unknown_key_is_account_does_not_exist() {
    let lab = Lab::start().await;
    let key = Key::generate();
    let url = lab.url("new-account");
    let reply = lab
        .post(
            &url,
            Some(&json!({"onlyReturnExisting": true})),
            Signer::Jwk(&key),
        )
        .await;
    reply.problem_of_type("accountDoesNotExist");
    assert!(reply.header("location").is_none());
    // Nothing was created by the lookup: a real newAccount now gets 201.
    lab.account_with(key).await;
}

/// RFC 8555 §7.3.1: "If a client sends such a request [onlyReturnExisting] and an
/// account does not exist, then the server MUST return an error response with status
/// code 400 (Bad Request) and type accountDoesNotExist".
#[tokio::test]
async fn only_return_existing_with_an_unknown_key_is_400() {
    let lab = Lab::start().await;
    let reply = lab
        .post(
            &lab.url("new-account"),
            Some(&json!({"onlyReturnExisting": true})),
            Signer::Jwk(&Key::generate()),
        )
        .await;
    reply.problem(400, "accountDoesNotExist");
}

#[tokio::test]
async fn unsupported_and_invalid_contacts_are_refused() {
    let lab = Lab::start().await;
    let url = lab.url("new-account");
    let cases = [
        ("tel:+15551234567", "unsupportedContact"),
        ("https://example.test/contact", "unsupportedContact"),
        ("mailto:not-an-address", "invalidContact"),
        ("mailto:a@example.test?subject=x", "invalidContact"),
        ("mailto:a@b.example,c@d.example", "invalidContact"),
    ];
    for (contact, kind) in cases {
        let key = Key::generate();
        let payload = json!({"termsOfServiceAgreed": true, "contact": [contact]});
        lab.post(&url, Some(&payload), Signer::Jwk(&key))
            .await
            .problem(400, kind);
        lab.post(
            &url,
            Some(&json!({"onlyReturnExisting": true})),
            Signer::Jwk(&key),
        )
        .await
        .problem_of_type("accountDoesNotExist");
    }

    // The same rules on an account update.
    let account = lab.account().await;
    lab.post(
        &account.url,
        Some(&json!({"contact": ["tel:+15551234567"]})),
        Signer::Kid(&account),
    )
    .await
    .problem(400, "unsupportedContact");
}

/// Each profile is its own ACME directory: a key's account in one must still be found
/// by newAccount after the same key registered in another.
#[tokio::test]
async fn same_key_in_two_profiles_keeps_both_accounts_findable() {
    let lab = Lab::start().await;
    let key = Key::generate();
    let payload = json!({"termsOfServiceAgreed": true});
    let first = lab
        .post(&lab.url("new-account"), Some(&payload), Signer::Jwk(&key))
        .await;
    first.expect(201);
    lab.post(
        &lab.url_in("other", "new-account"),
        Some(&payload),
        Signer::Jwk(&key),
    )
    .await
    .expect(201);
    let again = lab
        .post(&lab.url("new-account"), Some(&payload), Signer::Jwk(&key))
        .await;
    again.expect(200);
    assert_eq!(again.location(), first.location());
}

// ---------------------------------------------------------------------------------------
// Orders and authorizations (§7.4, §7.5)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn refused_identifier_is_rejected_with_a_subproblem_naming_it() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    let reply = lab
        .new_order(
            &account,
            &[("dns", "ok.example.test"), ("dns", "bad.forbidden")],
        )
        .await;
    let problem = reply.problem(403, "rejectedIdentifier");
    let subproblems = problem["subproblems"].as_array().expect("subproblems");
    assert_eq!(subproblems.len(), 1, "{problem}");
    assert_eq!(
        subproblems[0]["identifier"],
        json!({"type": "dns", "value": "bad.forbidden"})
    );
    assert!(subproblems[0]["type"]
        .as_str()
        .unwrap()
        .starts_with("urn:ietf:params:acme:error:"));
    assert!(lab.order_list(&account).await.is_empty());
}

#[tokio::test]
async fn unsupported_identifier_type_is_unsupported_identifier() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    lab.new_order(&account, &[("email", "ops@example.test")])
        .await
        .problem(400, "unsupportedIdentifier");
    lab.new_order(
        &account,
        &[("dns", "www.example.test"), ("tel", "+15551234567")],
    )
    .await
    .problem(400, "unsupportedIdentifier");
    assert!(lab.order_list(&account).await.is_empty());
}

#[tokio::test]
async fn another_accounts_order_and_authorization_are_404() {
    let lab = Lab::start().await;
    let owner = lab.account().await;
    let stranger = lab.account().await;
    let reply = lab.new_order(&owner, &[("dns", "www.example.test")]).await;
    let order = reply.expect(201);
    let order_url = reply.location();
    let authz_url = order["authorizations"][0].as_str().unwrap().to_string();
    let finalize_url = order["finalize"].as_str().unwrap().to_string();

    for url in [&order_url, &authz_url] {
        lab.post(url, None, Signer::Kid(&stranger))
            .await
            .problem(404, "malformed");
        lab.post(url, None, Signer::Kid(&owner)).await.expect(200);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let payload = json!({"csr": b64(csr(&["www.example.test"], &key))});
    lab.post(&finalize_url, Some(&payload), Signer::Kid(&stranger))
        .await
        .problem(404, "malformed");
    // Nor may the stranger read the owner's order list.
    lab.post(
        &format!("{}/orders", owner.url),
        None,
        Signer::Kid(&stranger),
    )
    .await
    .problem(403, "unauthorized");
}

#[tokio::test]
async fn post_as_get_order_and_authorizations_offer_the_right_challenges() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    let reply = lab
        .new_order(
            &account,
            &[
                ("dns", "www.example.test"),
                ("dns", "*.wild.example.test"),
                ("ip", IP),
            ],
        )
        .await;
    let created = reply.expect(201);
    let order_url = reply.location();
    assert_eq!(created["status"], "pending");

    let fetched = lab.post(&order_url, None, Signer::Kid(&account)).await;
    let order = fetched.expect(200);
    assert_eq!(fetched.location(), order_url);
    assert_eq!(order["status"], "pending");
    assert_eq!(order["authorizations"], created["authorizations"]);
    assert_eq!(order["finalize"], json!(format!("{order_url}/finalize")));
    assert!(order.get("certificate").is_none());
    let mut identifiers: Vec<Value> = order["identifiers"].as_array().unwrap().clone();
    identifiers.sort_by_key(|i| i["value"].as_str().unwrap().to_string());
    assert_eq!(
        identifiers,
        vec![
            json!({"type": "dns", "value": "*.wild.example.test"}),
            json!({"type": "ip", "value": IP}),
            json!({"type": "dns", "value": "www.example.test"}),
        ]
    );

    let mut seen = Vec::new();
    for authz_url in order["authorizations"].as_array().unwrap() {
        let authz = lab
            .post(authz_url.as_str().unwrap(), None, Signer::Kid(&account))
            .await
            .expect(200);
        assert_eq!(authz["status"], "pending");
        let mut kinds: Vec<&str> = authz["challenges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                assert_eq!(c["status"], "pending");
                let token = c["token"].as_str().unwrap();
                assert!(token.len() >= 22 && !token.contains('='), "{token}");
                c["type"].as_str().unwrap()
            })
            .collect();
        kinds.sort_unstable();
        let identifier = &authz["identifier"];
        let wildcard = authz["wildcard"] == json!(true);
        match (
            identifier["type"].as_str().unwrap(),
            identifier["value"].as_str().unwrap(),
        ) {
            ("dns", "www.example.test") => {
                assert!(!wildcard);
                assert_eq!(kinds, ["dns-01", "http-01", "tls-alpn-01"]);
            }
            ("dns", "wild.example.test") => {
                assert!(wildcard, "{authz}");
                assert_eq!(kinds, ["dns-01"]);
            }
            ("ip", IP) => {
                assert!(!wildcard);
                assert_eq!(kinds, ["http-01", "tls-alpn-01"]);
            }
            other => panic!("unexpected authorization identifier {other:?}"),
        }
        seen.push(identifier.clone());
    }
    assert_eq!(seen.len(), 3);
}

/// RFC 8555 §7.1.2.1: the orders list comes a page at a time with a `next` link, and
/// leaves out invalid orders.
#[tokio::test]
async fn the_orders_list_is_paginated_and_leaves_out_invalid_orders() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    let mut created = Vec::new();
    for n in 0..101 {
        let name = format!("n{n}.example.test");
        let reply = lab.new_order(&account, &[("dns", &name)]).await;
        let order = reply.expect(201);
        created.push((reply.location(), order));
    }
    // The first order's authorization deactivated: that order is invalid now.
    lab.deactivate_first_authz(&account, &created[0].1).await;

    let first = lab
        .post(
            &format!("{}/orders", account.url),
            None,
            Signer::Kid(&account),
        )
        .await;
    let page: Vec<Value> = first.expect(200)["orders"].as_array().unwrap().clone();
    let link = first.header("link").expect("a next link after a full page");
    let next = link
        .split(',')
        .find(|l| l.contains("rel=\"next\""))
        .and_then(|l| l.trim().strip_prefix('<'))
        .and_then(|l| l.split('>').next())
        .expect("rel=next")
        .to_string();
    assert!(
        next.starts_with(&format!("{}/orders/", account.url)),
        "{next}"
    );
    let second = lab.post(&next, None, Signer::Kid(&account)).await;
    let rest: Vec<Value> = second.expect(200)["orders"].as_array().unwrap().clone();
    assert!(second
        .header("link")
        .is_none_or(|l| !l.contains("rel=\"next\"")));
    // 100 orders looked at on the first page, one on the second; the invalid one is on
    // either and listed on neither.
    assert_eq!(page.len() + rest.len(), 100);
    assert!(page.len() >= 99 && rest.len() <= 1);
    let mut listed: Vec<String> = page
        .iter()
        .chain(&rest)
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    let mut expected: Vec<String> = created[1..].iter().map(|(url, _)| url.clone()).collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn finalize_before_ready_is_order_not_ready() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    let order = lab.new_order(&account, &[("ip", IP)]).await.expect(201);
    let key = rcgen::KeyPair::generate().unwrap();
    let payload = json!({"csr": b64(csr(&[IP], &key))});
    lab.post(
        order["finalize"].as_str().unwrap(),
        Some(&payload),
        Signer::Kid(&account),
    )
    .await
    .problem(403, "orderNotReady");
    assert_eq!(lab.backend.issued_count(), 0);
}

// ---------------------------------------------------------------------------------------
// The whole way through http-01, finalize and the certificate (§7.4, §8.3)
// ---------------------------------------------------------------------------------------

/// A ready order of `account` for [`IP`] (http-01 done); returns its URL and body.
async fn ready_order(lab: &Lab, account: &Account) -> (String, Value) {
    let reply = lab.new_order(account, &[("ip", IP)]).await;
    let order = reply.expect(201);
    let order_url = reply.location();
    lab.complete_http01(account, order["authorizations"][0].as_str().unwrap())
        .await;
    let order = lab
        .post(&order_url, None, Signer::Kid(account))
        .await
        .expect(200);
    assert_eq!(order["status"], "ready", "{order}");
    (order_url, order)
}

/// Finalize a ready order with a good CSR; returns the order body afterwards.
async fn finalize(lab: &Lab, account: &Account, order: &Value) -> Value {
    let key = rcgen::KeyPair::generate().unwrap();
    let payload = json!({"csr": b64(csr(&[IP], &key))});
    lab.post(
        order["finalize"].as_str().unwrap(),
        Some(&payload),
        Signer::Kid(account),
    )
    .await
    .expect(200)
}

#[tokio::test]
async fn http01_happy_path_with_bad_csrs_first() {
    let lab = Lab::start().await;
    let account_rcgen = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let account = lab.account_with(Key::from_rcgen(&account_rcgen)).await;
    let (order_url, order) = ready_order(&lab, &account).await;
    assert!(
        lab.http01.hits() >= 1,
        "the validator never fetched the token"
    );
    let finalize_url = order["finalize"].as_str().unwrap();

    // A CSR with a name the order lacks.
    let cert_key = rcgen::KeyPair::generate().unwrap();
    let extra = json!({"csr": b64(csr(&[IP, "extra.example.test"], &cert_key))});
    lab.post(finalize_url, Some(&extra), Signer::Kid(&account))
        .await
        .problem(400, "badCSR");
    // A CSR missing the order's name.
    let missing = json!({"csr": b64(csr(&["other.example.test"], &cert_key))});
    lab.post(finalize_url, Some(&missing), Signer::Kid(&account))
        .await
        .problem(400, "badCSR");
    // A CSR for the account key itself.
    let same_key = json!({"csr": b64(csr(&[IP], &account_rcgen))});
    lab.post(finalize_url, Some(&same_key), Signer::Kid(&account))
        .await
        .problem(400, "badCSR");
    // Not a CSR at all.
    let garbage = json!({"csr": b64(b"not a CSR")});
    lab.post(finalize_url, Some(&garbage), Signer::Kid(&account))
        .await
        .problem(400, "badCSR");
    assert_eq!(lab.backend.issued_count(), 0);
    let order = lab
        .post(&order_url, None, Signer::Kid(&account))
        .await
        .expect(200);
    assert_eq!(
        order["status"], "ready",
        "bad CSRs must leave the order ready"
    );

    // The good CSR.
    let good = csr(&[IP], &cert_key);
    let reply = lab
        .post(
            finalize_url,
            Some(&json!({"csr": b64(&good)})),
            Signer::Kid(&account),
        )
        .await;
    let order = reply.expect(200);
    assert_eq!(reply.location(), order_url);
    assert_eq!(order["status"], "valid", "{order}");
    let cert_url = order["certificate"].as_str().expect("a certificate URL");
    {
        let issued = lab.backend.issued.lock().unwrap();
        assert_eq!(issued.len(), 1);
        assert_eq!(issued[0].csr_der, good, "the backend got another CSR");
    }

    let cert = lab.post(cert_url, None, Signer::Kid(&account)).await;
    assert_eq!(cert.status.as_u16(), 200);
    assert_eq!(
        cert.header("content-type").as_deref(),
        Some("application/pem-certificate-chain")
    );
    let pem = String::from_utf8(cert.body.to_vec()).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert_eq!(pem, lab.backend.issued.lock().unwrap()[0].cert_pem);

    // Finalizing again: the order is valid, not ready.
    lab.post(
        finalize_url,
        Some(&json!({"csr": b64(&good)})),
        Signer::Kid(&account),
    )
    .await
    .problem(403, "orderNotReady");
    assert_eq!(lab.backend.issued_count(), 1);
}

// ---------------------------------------------------------------------------------------
// Revocation, deactivation, key change (§7.6, §7.3.6, §7.3.5)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn revoke_with_certificate_hold_is_bad_revocation_reason() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    let (_, order) = ready_order(&lab, &account).await;
    finalize(&lab, &account, &order).await;
    let cert_der = lab.backend.issued.lock().unwrap()[0].cert_der.clone();
    let url = lab.url("revoke-cert");

    for reason in [6u8, 2, 8] {
        let payload = json!({"certificate": b64(&cert_der), "reason": reason});
        lab.post(&url, Some(&payload), Signer::Kid(&account))
            .await
            .problem(400, "badRevocationReason");
    }
    assert!(lab.backend.revoked.lock().unwrap().is_empty());

    // An allowed reason goes through; a second attempt is alreadyRevoked.
    let payload = json!({"certificate": b64(&cert_der), "reason": 4});
    let reply = lab.post(&url, Some(&payload), Signer::Kid(&account)).await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(
        *lab.backend.revoked.lock().unwrap(),
        vec![("01".to_string(), 4)]
    );
    lab.post(&url, Some(&payload), Signer::Kid(&account))
        .await
        .problem(400, "alreadyRevoked");
}

#[tokio::test]
async fn deactivated_account_is_unauthorized() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    let reply = lab
        .post(
            &account.url,
            Some(&json!({"status": "deactivated"})),
            Signer::Kid(&account),
        )
        .await;
    assert_eq!(reply.expect(200)["status"], "deactivated");

    lab.post(&account.url, None, Signer::Kid(&account))
        .await
        .problem(403, "unauthorized");
    lab.new_order(&account, &[("dns", "www.example.test")])
        .await
        .problem(403, "unauthorized");
    lab.post(
        &account.url,
        Some(&json!({"status": "valid"})),
        Signer::Kid(&account),
    )
    .await
    .problem(403, "unauthorized");
    let revoke = json!({"certificate": b64(b"x"), "reason": 0});
    lab.post(
        &lab.url("revoke-cert"),
        Some(&revoke),
        Signer::Kid(&account),
    )
    .await
    .problem(403, "unauthorized");
}

/// RFC 8555 §7.3.6: "Once an account is deactivated, the server MUST NOT accept further
/// requests authorized by that account's key" — newAccount signed by it included (Boulder
/// and Pebble answer 403 unauthorized "An account with the provided public key exists but
/// is deactivated").
#[tokio::test]
async fn new_account_with_a_deactivated_key_is_unauthorized() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    lab.post(
        &account.url,
        Some(&json!({"status": "deactivated"})),
        Signer::Kid(&account),
    )
    .await
    .expect(200);
    for payload in [
        json!({"termsOfServiceAgreed": true}),
        json!({"onlyReturnExisting": true}),
    ] {
        lab.post(
            &lab.url("new-account"),
            Some(&payload),
            Signer::Jwk(&account.key),
        )
        .await
        .problem(403, "unauthorized");
    }
}

/// The keyChange request: outer JWS by `account` (kid), inner JWS by `new_key` (jwk).
async fn key_change(lab: &Lab, account: &Account, new_key: &Key) -> support::Reply {
    let url = lab.url("key-change");
    let inner_header = json!({"alg": "ES256", "jwk": new_key.jwk(), "url": url});
    let inner = new_key.sign(
        &inner_header,
        &payload_text(Some(
            &json!({"account": account.url, "oldKey": account.key.jwk()}),
        )),
    );
    lab.post(&url, Some(&inner), Signer::Kid(account)).await
}

#[tokio::test]
async fn key_change_to_a_key_of_another_account_is_409() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    let other = lab.account().await;

    let reply = key_change(&lab, &account, &other.key).await;
    assert_eq!(
        reply.status.as_u16(),
        409,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert_eq!(reply.location(), other.url);
    // Neither account changed hands.
    lab.post(&account.url, None, Signer::Kid(&account))
        .await
        .expect(200);
    lab.post(&other.url, None, Signer::Kid(&other))
        .await
        .expect(200);

    // A fresh key is accepted, and the old one stops working.
    let fresh = Key::generate();
    key_change(&lab, &account, &fresh).await.expect(200);
    lab.post(&account.url, None, Signer::Kid(&account))
        .await
        .problem(400, "malformed");
    let rolled = Account {
        key: fresh,
        url: account.url.clone(),
    };
    lab.post(&rolled.url, None, Signer::Kid(&rolled))
        .await
        .expect(200);
}

fn base64_decode(text: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.as_str().unwrap())
        .unwrap()
}

#[tokio::test]
async fn pre_authorization_lets_a_later_order_start_ready() {
    let lab = Lab::start().await;
    let account = lab.account().await;
    let directory = lab
        .send(
            Method::GET,
            &lab.url("directory"),
            None,
            axum::body::Body::empty(),
        )
        .await
        .expect(200);
    let new_authz = directory["newAuthz"]
        .as_str()
        .expect("newAuthz in the directory")
        .to_string();

    // Wildcards cannot be pre-authorized; refused names are rejectedIdentifier.
    let wildcard = json!({"identifier": {"type": "dns", "value": "*.example.test"}});
    lab.post(&new_authz, Some(&wildcard), Signer::Kid(&account))
        .await
        .problem(400, "malformed");
    let refused = json!({"identifier": {"type": "dns", "value": "www.forbidden"}});
    lab.post(&new_authz, Some(&refused), Signer::Kid(&account))
        .await
        .problem(403, "rejectedIdentifier");

    let payload = json!({"identifier": {"type": "ip", "value": IP}});
    let reply = lab
        .post(&new_authz, Some(&payload), Signer::Kid(&account))
        .await;
    let authz = reply.expect(201);
    assert_eq!(authz["status"], "pending");
    let authz_url = reply.location();
    lab.complete_http01(&account, &authz_url).await;

    // The order reuses the proven authorization: ready at once, nothing to validate.
    let order = lab.new_order(&account, &[("ip", IP)]).await.expect(201);
    assert_eq!(order["status"], "ready", "{order}");
    assert_eq!(order["authorizations"], json!([authz_url]));
    assert_eq!(lab.backend.issued_count(), 0);
}

// ---------------------------------------------------------------------------------------
// Abuse limits
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn orders_beyond_the_pending_limit_are_rate_limited_until_one_settles() {
    let lab = Lab::start().await;
    lab.server.set_max_pending_orders(2);
    let account = lab.account().await;
    let first = lab.new_order(&account, &[("dns", "a.example.test")]).await;
    first.expect(201);
    lab.new_order(&account, &[("dns", "b.example.test")])
        .await
        .expect(201);

    let refused = lab.new_order(&account, &[("dns", "c.example.test")]).await;
    let problem = refused.problem(429, "rateLimited");
    assert!(
        problem["detail"].as_str().unwrap().contains("2 orders"),
        "{problem}"
    );
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(
        retry_after > 0 && retry_after <= 7 * 86_400,
        "{retry_after}"
    );
    refused.nonce();
    assert_eq!(lab.order_list(&account).await.len(), 2);

    // Another account is not affected.
    let other = lab.account().await;
    lab.new_order(&other, &[("dns", "c.example.test")])
        .await
        .expect(201);

    // Deactivating the first order's authorization makes it invalid: a slot frees up.
    lab.deactivate_first_authz(&account, &first.json()).await;
    lab.new_order(&account, &[("dns", "c.example.test")])
        .await
        .expect(201);
    lab.new_order(&account, &[("dns", "d.example.test")])
        .await
        .problem(429, "rateLimited");

    // 0 lifts the limit.
    lab.server.set_max_pending_orders(0);
    lab.new_order(&account, &[("dns", "d.example.test")])
        .await
        .expect(201);
}

#[tokio::test]
async fn an_embedders_rate_limit_answer_is_a_problem_with_retry_after_and_a_nonce() {
    let lab = Lab::start().await;
    let uri: axum::http::Uri = "/acme/default/new-order".parse().unwrap();
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("host", "localhost".parse().unwrap());
    let response = lab
        .server
        .rate_limited(&headers, &uri, 7, "too many requests from 192.0.2.1");
    let (parts, body) = response.into_parts();
    let reply = support::Reply {
        status: parts.status,
        headers: parts.headers,
        body: axum::body::to_bytes(body, usize::MAX).await.unwrap(),
    };
    let problem = reply.problem(429, "rateLimited");
    assert_eq!(problem["detail"], "too many requests from 192.0.2.1");
    assert_eq!(reply.header("retry-after").as_deref(), Some("7"));
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
    assert!(reply
        .header("link")
        .unwrap()
        .contains("/acme/default/directory>;rel=\"index\""));
    // The nonce it carries is good for the next request.
    let nonce = reply.nonce();
    let account = lab.account().await;
    let url = lab.url("new-order");
    let payload = json!({"identifiers": [{"type": "dns", "value": "www.example.test"}]});
    let mut header = lab.protected(&url, Signer::Kid(&account)).await;
    header["nonce"] = json!(nonce);
    let jws = account.key.sign(&header, &payload_text(Some(&payload)));
    lab.post_jws(&url, &jws).await.expect(201);
}

// ---------------------------------------------------------------------------------------
// Expired orders and authorizations are pruned
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn expired_orders_and_authorizations_are_pruned_after_their_retention_and_the_account_goes_on(
) {
    let lab = Lab::start().await;
    let account = lab.account().await;
    // A valid order (its authorization valid for 30 days) and a pending one on its own
    // authorization (pending authorizations expire with their order, after 7 days).
    let reply = lab.new_order(&account, &[("ip", IP)]).await;
    let valid_order = reply.expect(201);
    let valid_url = reply.location();
    let valid_authz = valid_order["authorizations"][0]
        .as_str()
        .unwrap()
        .to_string();
    lab.complete_http01(&account, &valid_authz).await;
    let cert_key = rcgen::KeyPair::generate().unwrap();
    let finalized = lab
        .post(
            valid_order["finalize"].as_str().unwrap(),
            Some(&json!({"csr": b64(csr(&[IP], &cert_key))})),
            Signer::Kid(&account),
        )
        .await
        .expect(200);
    assert_eq!(finalized["status"], "valid", "{finalized}");
    let reply = lab.new_order(&account, &[("ip", "127.0.0.2")]).await;
    let pending_order = reply.expect(201);
    let pending_url = reply.location();
    let pending_authz = pending_order["authorizations"][0]
        .as_str()
        .unwrap()
        .to_string();
    let retain = time::Duration::days(30);
    let pruned = lab.server.prune_expired(retain).await.unwrap();
    assert_eq!((pruned.orders, pruned.authzs), (0, 0));

    // Both orders expired 7 days after they were made; 30 days later they go. Their
    // authorizations are kept 7 days more than orders are, so none goes yet.
    lab.advance(time::Duration::days(7 + 30) + time::Duration::hours(1));
    let pruned = lab.server.prune_expired(retain).await.unwrap();
    assert_eq!((pruned.orders, pruned.authzs), (2, 0));
    for url in [&valid_url, &pending_url] {
        lab.post(url, None, Signer::Kid(&account))
            .await
            .problem(404, "malformed");
    }
    assert!(lab.order_list(&account).await.is_empty());
    for url in [&valid_authz, &pending_authz] {
        lab.post(url, None, Signer::Kid(&account)).await.expect(200);
    }

    // The pending authorization expired with its order (7 days), the valid one 30 days
    // after its validation: each goes 37 days after that.
    lab.advance(time::Duration::days(7));
    let pruned = lab.server.prune_expired(retain).await.unwrap();
    assert_eq!((pruned.orders, pruned.authzs), (0, 1));
    lab.post(&pending_authz, None, Signer::Kid(&account))
        .await
        .problem(404, "malformed");
    lab.advance(time::Duration::days(23));
    let pruned = lab.server.prune_expired(retain).await.unwrap();
    assert_eq!((pruned.orders, pruned.authzs), (0, 1));
    lab.post(&valid_authz, None, Signer::Kid(&account))
        .await
        .problem(404, "malformed");

    // The account orders again, with a new authorization for the same name.
    let reply = lab.new_order(&account, &[("ip", IP)]).await;
    let again = reply.expect(201);
    assert_ne!(again["authorizations"][0], json!(valid_authz));
    assert_eq!(
        lab.order_list(&account).await,
        vec![json!(reply.location())]
    );
    let pruned = lab.server.prune_expired(retain).await.unwrap();
    assert_eq!((pruned.orders, pruned.authzs), (0, 0));
}
