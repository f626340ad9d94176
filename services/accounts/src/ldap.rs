//! The LDAP directory effector.
