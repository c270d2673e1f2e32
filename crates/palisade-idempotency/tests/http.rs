//! HTTP mode over an axum-style service on the in-memory store, under paused time: statuses, problem+json, header
//! allow-list, replay marker, body limits, non-UTF-8 bodies, sf-string keys, methods that pass through, and the
//! gateway key in the extensions. The scenarios live in `http_scenarios/` and run on Redis too (tests/http_redis.rs).

mod http_scenarios;

use http_scenarios as s;
use palisade_idempotency::MemoryStore;

#[tokio::test(start_paused = true)]
async fn replay_carries_marker_and_only_allow_listed_headers() {
    s::replay_carries_marker_and_only_allow_listed_headers(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn configured_headers_are_stored_but_forbidden_ones_never() {
    s::configured_headers_are_stored_but_forbidden_ones_never(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn non_utf8_bodies_fingerprint_and_replay_byte_for_byte() {
    s::non_utf8_bodies_fingerprint_and_replay_byte_for_byte(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn path_query_and_method_are_part_of_the_fingerprint() {
    s::path_query_and_method_are_part_of_the_fingerprint(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn sf_string_and_bare_keys_are_the_same_key() {
    s::sf_string_and_bare_keys_are_the_same_key(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_limit_get_413_with_or_without_content_length() {
    s::bodies_over_the_limit_get_413_with_or_without_content_length(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn methods_not_covered_pass_through_untouched() {
    s::methods_not_covered_pass_through_untouched(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn missing_key_is_400_when_required_and_passes_otherwise() {
    s::missing_key_is_400_when_required_and_passes_otherwise(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn in_flight_duplicate_gets_409_with_retry_after_then_a_replay() {
    s::in_flight_duplicate_gets_409_with_retry_after_then_a_replay(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn waiting_duplicates_get_the_replay() {
    s::waiting_duplicates_get_the_replay(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn terminal_answers_are_stored_and_failures_released() {
    s::terminal_answers_are_stored_and_failures_released(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn scopes_keep_tenants_apart_and_change_the_gateway_key() {
    s::scopes_keep_tenants_apart_and_change_the_gateway_key(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn patch_is_covered_by_default_and_methods_are_configurable() {
    s::patch_is_covered_by_default_and_methods_are_configurable(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_decides_what_is_stored() {
    s::a_custom_classifier_decides_what_is_stored(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn refusals_before_any_effect_leave_the_key_unused() {
    s::refusals_before_any_effect_leave_the_key_unused(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn json_bodies_are_fingerprinted_by_value_and_content_type_counts() {
    s::json_bodies_are_fingerprinted_by_value_and_content_type_counts(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn the_typed_builder_switches_to_http_with_its_settings() {
    s::the_typed_builder_switches_to_http_with_its_settings(MemoryStore::new()).await;
}
