// One portable schema for both dialects: text ids, UTC timestamps without a
// zone, booleans, JSON as text. Kept by hand; `tests/it/migrations.rs` checks it
// against what the migrations create on each database.

diesel::table! {
    sites (id) {
        id -> Text,
        code -> Text,
        name -> Text,
        programme -> Text,
        org_code -> Nullable<Text>,
        active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        username -> Text,
        display_name -> Text,
        role -> Text,
        password_hash -> Text,
        must_change_password -> Bool,
        active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        initials -> Nullable<Text>,
    }
}

diesel::table! {
    user_sites (user_id, site_id) {
        user_id -> Text,
        site_id -> Text,
    }
}

diesel::table! {
    tokens (id) {
        id -> Text,
        user_id -> Text,
        kind -> Text,
        token_hash -> Text,
        label -> Nullable<Text>,
        created_by -> Nullable<Text>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    login_throttle (throttle_key) {
        throttle_key -> Text,
        failures -> Integer,
        window_started_at -> Timestamp,
        locked_until -> Nullable<Timestamp>,
    }
}

diesel::table! {
    audit_log (id) {
        id -> BigInt,
        occurred_at -> Timestamp,
        actor_id -> Nullable<Text>,
        actor_role -> Nullable<Text>,
        action -> Text,
        object_type -> Nullable<Text>,
        object_id -> Nullable<Text>,
        detail -> Nullable<Text>,
        request_id -> Nullable<Text>,
        client_ip -> Nullable<Text>,
        seq -> Nullable<BigInt>,
        actor_sites -> Nullable<Text>,
        purpose -> Nullable<Text>,
        prev_hash -> Nullable<Text>,
        hash -> Nullable<Text>,
        token_created_by -> Nullable<Text>,
    }
}

diesel::table! {
    audit_head (id) {
        id -> Integer,
        seq -> BigInt,
        hash -> Text,
        chain_id -> Nullable<Text>,
        keyed_from -> Nullable<BigInt>,
        key_id -> Nullable<Text>,
    }
}

diesel::joinable!(user_sites -> users (user_id));
diesel::joinable!(user_sites -> sites (site_id));
diesel::joinable!(tokens -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    sites,
    users,
    user_sites,
    tokens,
    login_throttle,
    audit_log
);

diesel::table! {
    forms (id) {
        id -> Text,
        programme -> Text,
        title -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    form_versions (form_id, version) {
        form_id -> Text,
        version -> Text,
        status -> Text,
        document -> Text,
        sha256 -> Text,
        published_at -> Timestamp,
        published_by -> Nullable<Text>,
        retired_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    form_drafts (form_id) {
        form_id -> Text,
        version -> Text,
        source -> Text,
        document -> Text,
        uploaded_by -> Nullable<Text>,
        uploaded_at -> Timestamp,
    }
}

diesel::joinable!(form_versions -> forms (form_id));
diesel::allow_tables_to_appear_in_same_query!(forms, form_versions);

diesel::table! {
    odk_xforms (form_id, odk_version) {
        form_id -> Text,
        version -> Text,
        odk_version -> Text,
        key_id -> Text,
        xml -> Text,
        md5 -> Text,
        created_at -> Timestamp,
        generator -> Integer,
        case_list -> Bool,
    }
}

diesel::table! {
    odk_upload_parts (instance_id, name) {
        instance_id -> Text,
        name -> Text,
        submitted_by -> Text,
        content -> Text,
        received_at -> Timestamp,
    }
}

diesel::table! {
    keys (kid) {
        kid -> Text,
        programme -> Text,
        bits -> Integer,
        public_jwk -> Text,
        sealed_private -> Text,
        current -> Bool,
        created_at -> Timestamp,
        retired_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    sync_changes (seq) {
        seq -> BigInt,
        kind -> Text,
        object_id -> Text,
        user_id -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    counters (name) {
        name -> Text,
        value -> BigInt,
    }
}

diesel::table! {
    cases (id) {
        id -> Text,
        programme -> Text,
        site_id -> Text,
        assigned_to -> Nullable<Text>,
        state -> Text,
        version -> BigInt,
        opened_by_instance -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        child_id -> Nullable<Text>,
        number -> Nullable<Text>,
        admission -> Integer,
        facts -> Text,
        opened_at -> Nullable<Timestamp>,
        closed_at -> Nullable<Timestamp>,
        next_due_at -> Nullable<Timestamp>,
        merged_into -> Nullable<Text>,
        event_days -> Nullable<Text>,
        deadline_tally -> Nullable<Text>,
    }
}

diesel::table! {
    children (id) {
        id -> Text,
        programme -> Text,
        site_id -> Text,
        root_number -> Nullable<Text>,
        admissions -> Integer,
        family_group_id -> Nullable<Text>,
        name_key -> Nullable<Text>,
        date_of_birth -> Nullable<Text>,
        sex -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    case_number_counters (scope) {
        scope -> Text,
        last_value -> BigInt,
    }
}

diesel::table! {
    case_events (id) {
        id -> Text,
        case_id -> Text,
        seq -> BigInt,
        name -> Text,
        kind -> Text,
        occurred_at -> Text,
        occurred_at_utc -> Timestamp,
        recorded_at -> Timestamp,
        recorded_by -> Text,
        base_version -> Nullable<BigInt>,
        facts -> Text,
        detail -> Nullable<Text>,
        superseded -> Bool,
    }
}

diesel::table! {
    indicator_cases (id) {
        id -> BigInt,
        case_id -> Text,
        spec -> Text,
        closed_at -> Nullable<Timestamp>,
        facts -> Text,
        event_days -> Text,
        records -> Nullable<Text>,
        deadlines -> Text,
    }
}

diesel::table! {
    case_deadlines (case_id, rule_id, occurrence) {
        case_id -> Text,
        rule_id -> Text,
        occurrence -> Integer,
        programme -> Text,
        site_id -> Text,
        assigned_to -> Nullable<Text>,
        started_at -> Timestamp,
        due_at -> Timestamp,
        soon_at -> Timestamp,
        outcome -> Text,
        met_at -> Nullable<Timestamp>,
        on_time -> Nullable<Bool>,
        ended_by -> Nullable<Text>,
        late_in_days -> Bool,
    }
}

diesel::table! {
    conflicts (id) {
        id -> Text,
        case_id -> Text,
        site_id -> Text,
        fact -> Text,
        event_id -> Text,
        event_value -> Text,
        other_event_id -> Text,
        other_value -> Text,
        applied_value -> Text,
        status -> Text,
        created_at -> Timestamp,
        resolved_by -> Nullable<Text>,
        resolved_at -> Nullable<Timestamp>,
        resolution_event_id -> Nullable<Text>,
    }
}

diesel::table! {
    duplicate_candidates (id) {
        id -> Text,
        child_id -> Text,
        other_child_id -> Text,
        site_id -> Text,
        reasons -> Text,
        score -> Integer,
        status -> Text,
        created_at -> Timestamp,
        decided_by -> Nullable<Text>,
        decided_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    calendar_days (programme, day) {
        programme -> Text,
        day -> Text,
        kind -> Text,
        name -> Text,
        changed_by -> Nullable<Text>,
        changed_at -> Timestamp,
    }
}

diesel::table! {
    submissions (instance_id) {
        instance_id -> Text,
        form_id -> Text,
        form_version -> Text,
        case_id -> Nullable<Text>,
        submitted_by -> Text,
        device_id -> Text,
        started_at -> Nullable<Timestamp>,
        completed_at -> Timestamp,
        received_at -> Timestamp,
        kid -> Text,
        raw_jwe -> Text,
        payload -> Text,
        content_sha256 -> Text,
        base_case_version -> Nullable<BigInt>,
        supersedes -> Nullable<Text>,
        superseded_by -> Nullable<Text>,
        status -> Text,
        site_id -> Nullable<Text>,
        case_number -> Nullable<Text>,
        pending_case_id -> Nullable<Text>,
        pending_event -> Nullable<Text>,
        problems -> Nullable<Text>,
    }
}

diesel::table! {
    submission_cells (form_id, received_at, instance_id) {
        form_id -> Text,
        received_at -> Timestamp,
        instance_id -> Text,
        layout -> Text,
        event_day -> Text,
        identifying -> Text,
    }
}

diesel::table! {
    submission_cells_deidentified (form_id, received_at, instance_id) {
        form_id -> Text,
        received_at -> Timestamp,
        instance_id -> Text,
        layout -> Text,
        event_day -> Text,
        deidentified -> Text,
    }
}

diesel::table! {
    submission_repeats (form_id, received_at, instance_id) {
        form_id -> Text,
        received_at -> Timestamp,
        instance_id -> Text,
        kept -> Text,
        data -> Text,
    }
}

diesel::table! {
    attachments (instance_id, name) {
        instance_id -> Text,
        name -> Text,
        media_type -> Text,
        size -> BigInt,
        sha256 -> Text,
        kid -> Nullable<Text>,
        raw_jwe -> Nullable<Text>,
        received_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    break_glass_grants (id) {
        id -> Text,
        case_id -> Text,
        user_id -> Text,
        reason -> Text,
        granted_at -> Timestamp,
        expires_at -> Timestamp,
        renewal -> Bool,
    }
}

diesel::table! {
    access_requests (id) {
        id -> Text,
        case_id -> Text,
        requester -> Text,
        received_on -> Date,
        recorded_by -> Text,
        recorded_at -> Timestamp,
        status -> Text,
        reviewed_by -> Nullable<Text>,
        reviewed_at -> Nullable<Timestamp>,
        best_interests_reasoning -> Nullable<Text>,
        redactions -> Text,
        copy_produced_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    consents (id) {
        id -> Text,
        case_id -> Text,
        subject -> Text,
        kind -> Text,
        medium -> Text,
        scopes -> Text,
        recipient -> Nullable<Text>,
        given_on -> Date,
        instance_id -> Nullable<Text>,
        recorded_by -> Text,
        recorded_at -> Timestamp,
        withdrawn_on -> Nullable<Date>,
        withdrawn_at -> Nullable<Timestamp>,
        withdrawn_by -> Nullable<Text>,
        withdrawal_reason -> Nullable<Text>,
    }
}

diesel::table! {
    disclosures (id) {
        id -> Text,
        occurred_at -> Timestamp,
        actor_id -> Nullable<Text>,
        programme -> Text,
        case_id -> Nullable<Text>,
        legal_basis -> Text,
        legal_provision -> Nullable<Text>,
        consent_ids -> Nullable<Text>,
        recipient -> Text,
        purpose -> Text,
        method -> Text,
        what -> Text,
    }
}

diesel::table! {
    disclosure_sites (disclosure_id, site_id) {
        disclosure_id -> Text,
        site_id -> Text,
    }
}

diesel::joinable!(consents -> cases (case_id));
diesel::joinable!(disclosure_sites -> disclosures (disclosure_id));
diesel::allow_tables_to_appear_in_same_query!(consents, cases);
diesel::allow_tables_to_appear_in_same_query!(disclosures, disclosure_sites);
diesel::allow_tables_to_appear_in_same_query!(disclosures, cases);
diesel::joinable!(attachments -> submissions (instance_id));
diesel::joinable!(break_glass_grants -> cases (case_id));
diesel::joinable!(access_requests -> cases (case_id));
diesel::allow_tables_to_appear_in_same_query!(access_requests, cases);
diesel::allow_tables_to_appear_in_same_query!(break_glass_grants, cases);
diesel::allow_tables_to_appear_in_same_query!(break_glass_grants, users);
diesel::joinable!(submission_cells -> submissions (instance_id));
diesel::joinable!(submission_cells_deidentified -> submissions (instance_id));
diesel::joinable!(submission_repeats -> submissions (instance_id));
diesel::allow_tables_to_appear_in_same_query!(submission_repeats, submissions);
diesel::allow_tables_to_appear_in_same_query!(attachments, submissions);
diesel::allow_tables_to_appear_in_same_query!(submission_cells, submissions);
diesel::allow_tables_to_appear_in_same_query!(submission_cells, cases);
diesel::allow_tables_to_appear_in_same_query!(submission_cells, users);
diesel::joinable!(case_events -> cases (case_id));
diesel::joinable!(case_deadlines -> cases (case_id));
diesel::joinable!(indicator_cases -> cases (case_id));
diesel::allow_tables_to_appear_in_same_query!(indicator_cases, cases);
diesel::joinable!(cases -> children (child_id));
diesel::allow_tables_to_appear_in_same_query!(
    cases,
    case_events,
    case_deadlines,
    children,
    conflicts,
    submissions,
    users
);
diesel::allow_tables_to_appear_in_same_query!(cases, user_sites);
