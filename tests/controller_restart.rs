//! A controller killed mid-way (SIGKILL) and started again: what it had done
//! stands, and it finishes the rest.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

#[test]
fn codes_stay_unique_and_assigned_once_when_the_controller_is_killed_mid_way() {
    let (class, prefix) = new_class("restart-class");
    let batch = unique("restart");
    create_batch(&class, &batch, 200);

    let first = Controller::spawn(&[], "tenure-restart-first");
    wait_for("some codes", Duration::from_secs(60), || {
        let codes = codes_of_batch(&batch)?;
        (codes.len() >= 40)
            .then_some(())
            .ok_or(format!("{} codes", codes.len()))
    });
    first.kill();
    // Read after the kill: nothing changes until the restart.
    let assigned_before = codes_of_batch(&batch).unwrap();
    assert!(
        assigned_before.len() < 200,
        "the kill came too late to test anything"
    );

    let _second = Controller::spawn(&[], "tenure-restart-second");
    let all = wait_for("200 codes", Duration::from_secs(120), || {
        let codes = codes_of_batch(&batch)?;
        (codes.len() == 200)
            .then_some(codes.clone())
            .ok_or(format!("{} codes", codes.len()))
    });
    for (name, code) in &assigned_before {
        assert_eq!(&all[name], code, "the code of {name} changed");
    }
    let distinct: BTreeSet<&String> = all.values().collect();
    assert_eq!(distinct.len(), 200, "codes repeat");
    for code in all.values() {
        assert!(code.starts_with(&format!("{prefix}-")), "{code}");
    }
}
