//! The HTTP-mode scenarios of `http_scenarios/` on Redis, through palisade-testkit: each test has its own key
//! prefix on one server; without Redis a test says SKIPPED (and fails under `PALISADE_REQUIRE_REDIS=1`). Real time:
//! no scenario depends on the clock.

mod http_scenarios;

use http_scenarios as s;
use palisade_idempotency::RedisStore;
use palisade_testkit::RedisTest;

async fn setup(name: &str) -> Option<(RedisTest, RedisStore)> {
    let r = palisade_testkit::redis(name).await?;
    let store = RedisStore::new(r.conn.clone()).with_prefix(r.prefix.clone());
    Some((r, store))
}

#[tokio::test]
async fn replay_carries_marker_and_only_allow_listed_headers_redis() {
    let Some((r, store)) = setup("idem_http_replay").await else { return };
    s::replay_carries_marker_and_only_allow_listed_headers(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn configured_headers_are_stored_but_forbidden_ones_never_redis() {
    let Some((r, store)) = setup("idem_http_stored_headers").await else { return };
    s::configured_headers_are_stored_but_forbidden_ones_never(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn non_utf8_bodies_fingerprint_and_replay_byte_for_byte_redis() {
    let Some((r, store)) = setup("idem_http_non_utf8").await else { return };
    s::non_utf8_bodies_fingerprint_and_replay_byte_for_byte(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn path_query_and_method_are_part_of_the_fingerprint_redis() {
    let Some((r, store)) = setup("idem_http_fingerprint").await else { return };
    s::path_query_and_method_are_part_of_the_fingerprint(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn sf_string_and_bare_keys_are_the_same_key_redis() {
    let Some((r, store)) = setup("idem_http_sf_string").await else { return };
    s::sf_string_and_bare_keys_are_the_same_key(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_with_or_without_content_length_redis() {
    let Some((r, store)) = setup("idem_http_body_limit").await else { return };
    s::bodies_over_the_limit_get_413_with_or_without_content_length(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn methods_not_covered_pass_through_untouched_redis() {
    let Some((r, store)) = setup("idem_http_uncovered").await else { return };
    s::methods_not_covered_pass_through_untouched(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn missing_key_is_400_when_required_and_passes_otherwise_redis() {
    let Some((r, store)) = setup("idem_http_missing_key").await else { return };
    s::missing_key_is_400_when_required_and_passes_otherwise(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn in_flight_duplicate_gets_409_with_retry_after_then_a_replay_redis() {
    let Some((r, store)) = setup("idem_http_in_flight").await else { return };
    s::in_flight_duplicate_gets_409_with_retry_after_then_a_replay(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn waiting_duplicates_get_the_replay_redis() {
    let Some((r, store)) = setup("idem_http_waiting").await else { return };
    s::waiting_duplicates_get_the_replay(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn terminal_answers_are_stored_and_failures_released_redis() {
    let Some((r, store)) = setup("idem_http_outcomes").await else { return };
    s::terminal_answers_are_stored_and_failures_released(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn scopes_keep_tenants_apart_and_change_the_gateway_key_redis() {
    let Some((r, store)) = setup("idem_http_scopes").await else { return };
    s::scopes_keep_tenants_apart_and_change_the_gateway_key(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn patch_is_covered_by_default_and_methods_are_configurable_redis() {
    let Some((r, store)) = setup("idem_http_methods").await else { return };
    s::patch_is_covered_by_default_and_methods_are_configurable(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn a_custom_classifier_decides_what_is_stored_redis() {
    let Some((r, store)) = setup("idem_http_classifier").await else { return };
    s::a_custom_classifier_decides_what_is_stored(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn refusals_before_any_effect_leave_the_key_unused_redis() {
    let Some((r, store)) = setup("idem_http_not_executed").await else { return };
    s::refusals_before_any_effect_leave_the_key_unused(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn json_bodies_are_fingerprinted_by_value_and_content_type_counts_redis() {
    let Some((r, store)) = setup("idem_http_json_fingerprint").await else { return };
    s::json_bodies_are_fingerprinted_by_value_and_content_type_counts(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn the_typed_builder_switches_to_http_with_its_settings_redis() {
    let Some((r, store)) = setup("idem_http_switch").await else { return };
    s::the_typed_builder_switches_to_http_with_its_settings(store).await;
    r.cleanup().await;
}
