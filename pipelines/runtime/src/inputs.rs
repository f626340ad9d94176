//! [`inputs!`](crate::inputs): a consumer's input enum over several event
//! types, decoded by each record's writer schema name.

/// Declares a consumer's input enum, one variant per event type, and its
/// [`Decode`](crate::Decode): a record is read as the variant whose
/// event's `NAME` is the record's writer schema name. Any other event is
/// an error naming what was expected, so the runtime dead-letters it;
/// or, with a last line `_ => Other`, it is read as `Other(Envelope)`
/// (a consumer of a shared topic passes such events by).
///
/// ```
/// use mailfleet_events::{clock::ClockTicked, config::ConfigChanged};
///
/// mailfleet_runtime::inputs! {
///     /// What the example consumer reads.
///     pub enum ExampleInput {
///         Tick(ClockTicked),
///         Config(ConfigChanged),
///         _ => Other,
///     }
/// }
/// ```
#[macro_export]
macro_rules! inputs {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident($event:ty) ),+
            $(, _ => $other:ident)? $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant($event), )+
            $(
                /// Any other event on the topics read: its envelope is not
                /// read, the consumer passes it by.
                $other($crate::__events::Envelope),
            )?
        }

        impl $crate::Decode for $name {
            fn decode(
                registry: &$crate::__events::Registry,
                bytes: &[u8],
            ) -> Result<Self, $crate::__events::EventError> {
                let writer = registry.writer_of(bytes)?;
                $(
                    if writer.name == <$event as $crate::__events::Event>::NAME {
                        return registry.decode(bytes).map(Self::$variant);
                    }
                )+
                $( return Ok(Self::$other($crate::__events::Envelope::default())); )?
                #[allow(unreachable_code)]
                Err($crate::__events::EventError::WrongType {
                    expected: concat!($(stringify!($event), " "),+),
                    actual: writer.name.clone(),
                })
            }

            fn envelope(&self) -> &$crate::__events::Envelope {
                match self {
                    $( Self::$variant(e) => $crate::__events::Event::envelope(e), )+
                    $( Self::$other(e) => e, )?
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use mailfleet_events::{
        clock::ClockTicked, config::ConfigChanged, Envelope, EventError, Registry,
    };

    use crate::Decode;

    crate::inputs! {
        enum Both {
            Tick(ClockTicked),
            Config(ConfigChanged),
        }
    }

    fn tick() -> ClockTicked {
        ClockTicked {
            envelope: Envelope::new("tick-1", 1_000, "test"),
            clock: "hourly".into(),
            period_ms: 3_600_000,
        }
    }

    #[test]
    fn reads_each_variant_by_its_writer_name() {
        let registry = Registry::builtin();
        let bytes = registry.encode(&tick()).unwrap();
        let Both::Tick(t) = Both::decode(registry, &bytes).unwrap() else {
            panic!("a ClockTicked read as another variant");
        };
        assert_eq!(t.envelope.event_id, "tick-1");
        assert_eq!(
            Both::decode(registry, &bytes).unwrap().envelope().event_id,
            "tick-1"
        );
    }

    #[test]
    fn another_event_is_an_error_naming_what_was_expected() {
        crate::inputs! {
            enum OnlyConfig {
                Config(ConfigChanged),
            }
        }
        let registry = Registry::builtin();
        let bytes = registry.encode(&tick()).unwrap();
        match OnlyConfig::decode(registry, &bytes) {
            Err(EventError::WrongType { expected, actual }) => {
                assert!(expected.contains("ConfigChanged"), "{expected}");
                assert_eq!(actual, "mailfleet.clock.ClockTicked");
            }
            Err(e) => panic!("another error: {e}"),
            Ok(_) => panic!("a ClockTicked was read as a ConfigChanged"),
        }
    }

    #[test]
    fn a_catch_all_takes_any_other_event() {
        crate::inputs! {
            enum ConfigOrOther {
                Config(ConfigChanged),
                _ => Other,
            }
        }
        let registry = Registry::builtin();
        let bytes = registry.encode(&tick()).unwrap();
        assert!(matches!(
            ConfigOrOther::decode(registry, &bytes),
            Ok(ConfigOrOther::Other(_))
        ));
        assert!(ConfigOrOther::decode(registry, b"not an event").is_err());
    }
}
