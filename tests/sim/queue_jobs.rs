//! The `queue_jobs` example, run on tokio's paused clock: two job types with payloads
//! through `SharedQueue` + `WorkerPool`, staged by an outbox in the caller's write.

#[path = "../../examples/queue_jobs.rs"]
#[allow(dead_code, unreachable_pub)]
mod example;

use example::{BOUNCED, WELCOME_EMAIL, demo};

#[tokio::test(start_paused = true)]
async fn each_email_is_sent_once_each_profile_is_at_its_latest_and_a_bounce_is_a_dead_letter() {
    let out = demo().await.unwrap();

    // Every welcome email of a good address went out exactly once, though the first
    // send lost its acknowledgement and was delivered again.
    let mut sent: Vec<&str> = out.sent.iter().map(|m| m.address.as_str()).collect();
    sent.sort_unstable();
    assert_eq!(sent, ["ada@example.com", "grace@example.com"]);
    assert_eq!(out.mail_deliveries, 3, "one of the two was delivered twice");

    // The CRM holds every user at the version of the users table (ada was renamed
    // twice: version 3, "Ada King").
    assert_eq!(out.crm.copies.len(), out.users.len());
    for (key, (version, profile)) in &out.users {
        let (held, _, copy) = &out.crm.copies[key];
        assert_eq!((held, copy), (version, profile), "{key}");
    }
    assert_eq!(out.users["ada"].0, 3);
    assert_eq!(out.users["ada"].1.name, "Ada King");

    // The bouncing address failed every attempt: a dead letter with the mailer's error.
    assert_eq!(out.dead_letters.len(), 1, "{:?}", out.dead_letters);
    let letter = &out.dead_letters[0];
    assert_eq!(letter.job.job_type(), WELCOME_EMAIL);
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.last_error, BOUNCED);
    let mail: example::Welcome = letter.job.payload.decode().unwrap();
    assert_eq!(mail.address, "bounce@example.com");

    // The signup whose own write failed staged nothing, and left no user.
    assert_eq!(out.refused_signup_staged, 0);
    assert!(!out.users.contains_key("mallory"));
}
