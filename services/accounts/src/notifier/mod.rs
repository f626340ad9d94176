//! The notifier effector: notices and admin alerts by SMTP (being written).
