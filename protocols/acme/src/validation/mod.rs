//! placeholder, replaced by the validation helper
