-- mailfleet's own rules, loaded by the stock rules/rspamd.lua from
-- $LOCAL_CONFDIR (this folder).

-- MAILFLEET_TEST_SPAMMY: a test and demo facility, not a spam rule. A message
-- with the header `X-Mailfleet-Test: spammy` scores 8.0, which with nothing
-- else lands between add_header (6) and reject (15): action "add header".
-- Tests and the demo use it to get that action on purpose (GTUBE gives reject).
rspamd_config.MAILFLEET_TEST_SPAMMY = {
  callback = function(task)
    local value = task:get_header('X-Mailfleet-Test')
    return value ~= nil and value:lower():match('^%s*spammy%s*$') ~= nil
  end,
  score = 8.0,
  group = 'mailfleet',
  description = 'Test message: header X-Mailfleet-Test: spammy (mailfleet tests and demo)',
}
