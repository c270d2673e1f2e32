//! A tiny harness: numbered scenarios, each with claims that are checked, not assumed.

#[derive(Default)]
pub struct Report {
    scenario: usize,
    claims: usize,
    failed: Vec<String>,
}

impl Report {
    /// Starts the next scenario: prints `== Scenario N: title` and its narrative.
    pub fn scenario(&mut self, title: &str, narrative: &str) {
        self.scenario += 1;
        println!("== Scenario {}: {title}", self.scenario);
        for line in narrative.lines() {
            println!("   {}", line.trim());
        }
    }

    /// Prints a step of the story.
    pub fn step(&self, text: impl AsRef<str>) {
        println!("   - {}", text.as_ref());
    }

    /// Checks a claim; a false claim is printed and makes the program exit non-zero.
    pub fn check(&mut self, claim: &str, holds: bool) {
        self.claims += 1;
        if holds {
            println!("   ✓ {claim}");
        } else {
            println!("   ✗ CLAIM FAILED: {claim}");
            self.failed.push(format!("scenario {}: {claim}", self.scenario));
        }
    }

    /// Prints the summary and returns the exit code.
    pub fn finish(self) -> i32 {
        println!();
        if self.failed.is_empty() {
            println!("All {} claims in {} scenarios hold.", self.claims, self.scenario);
            0
        } else {
            println!("{} of {} claims FAILED:", self.failed.len(), self.claims);
            for f in &self.failed {
                println!("  - {f}");
            }
            1
        }
    }
}
