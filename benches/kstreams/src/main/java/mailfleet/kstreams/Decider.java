package mailfleet.kstreams;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.function.BiConsumer;

/**
 * The greylist decision, line for line the one of
 * {@code services/greylist/src/decide.rs} (postgrey 1.37's
 * {@code smtpd_access_policy}): a function of the state and the attempt,
 * with the attempt's event time as "now". State keys are the Rust
 * consumer's: {@code t} + triplet → (first, last); {@code a} + client
 * address → (count, last); {@code i} + Postfix instance → time.
 */
final class Decider {
    /** The state a decision reads and changes (one partition's store). */
    interface State {
        byte[] get(byte[] key);
        void put(byte[] key, byte[] value);
        void delete(byte[] key);
        /** Every entry whose key starts with {@code prefix}. */
        void scan(byte prefix, BiConsumer<byte[], byte[]> f);
    }

    /** The answer to one attempt, before it becomes an event. */
    record Answer(String verdict, String reason, String action, long delaySeconds, String triplet) {
        static Answer dunno(String reason, String triplet) {
            return new Answer("PASS", reason, "DUNNO", 0, triplet);
        }
    }

    /** The attempt's fields a decision uses. */
    record Attempt(String clientAddress, String clientName, String sender, String recipient,
                   String instance) {}

    private static final long HOUR = 3600;
    private static final long INSTANCE_TTL = 86_400;
    private static final DateTimeFormatter RFC2822 =
            DateTimeFormatter.ofPattern("EEE, dd MMM yyyy HH:mm:ss 'UTC'", Locale.ENGLISH)
                    .withZone(ZoneOffset.UTC);

    private final Whitelists fileLists;
    private final String version;

    /**
     * @param fileLists the whitelist files' lists, for settings recorded without them
     * @param version   {@code %v} in the header (the Rust crate's version)
     */
    Decider(Whitelists fileLists, String version) {
        this.fileLists = fileLists;
        this.version = version;
    }

    static byte[] key(char prefix, String body) {
        byte[] b = body.getBytes(StandardCharsets.UTF_8);
        byte[] out = new byte[b.length + 1];
        out[0] = (byte) prefix;
        System.arraycopy(b, 0, out, 1, b.length);
        return out;
    }

    static byte[] pair(long a, long b) {
        return ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(a).putLong(b).array();
    }

    static long[] pair(byte[] v) {
        ByteBuffer buf = ByteBuffer.wrap(v).order(ByteOrder.LITTLE_ENDIAN);
        return new long[] {buf.getLong(), buf.getLong()};
    }

    /** Judge one attempt at {@code now} (seconds) with rules {@code c}. */
    Answer judge(Rules c, State state, Attempt a, long now) {
        if (a.clientAddress() == null || a.clientName() == null || a.recipient() == null
                || a.sender() == null) {
            return Answer.dunno("MISSING_ATTRIBUTES", null);
        }
        byte[] ip = Triplet.parseIp(a.clientAddress());
        if (ip == null) {
            return Answer.dunno("MISSING_ATTRIBUTES", null);
        }
        Whitelists lists = c.lists != null ? c.lists : fileLists;
        if (lists.client(ip, a.clientName())) {
            return Answer.dunno("WHITELISTED_CLIENT", null);
        }
        String rcpt = a.recipient();
        if (lists.recipient(rcpt)) {
            return Answer.dunno("WHITELISTED_RECIPIENT", null);
        }
        byte[] awlKey = key('a', Triplet.format(ip));
        long[] awl = null;
        if (c.autoWhitelistClients > 0) {
            byte[] v = state.get(awlKey);
            awl = v == null ? null : pair(v);
        }
        if (awl != null && awl[0] >= c.autoWhitelistClients) {
            if (now >= awl[1] + HOUR || awl[1] > now) {
                state.put(awlKey, pair(awl[0] + 1, now));
            }
            return Answer.dunno("AUTO_WHITELISTED", null);
        }

        String triplet = Triplet.of(Triplet.clientNet(ip, c), a.sender(), rcpt);
        byte[] tkey = key('t', triplet);
        long first = now;
        boolean passedBefore = false, restarted = false;
        byte[] seenBytes = state.get(tkey);
        if (seenBytes != null) {
            long[] seen = pair(seenBytes);
            first = seen[0];
            passedBefore = seen[1] - seen[0] >= c.delayS;
            if (!passedBefore && now - first > c.retryWindowS) {
                first = now;
                restarted = true;
            }
            first = Math.min(first, now);
        }
        state.put(tkey, pair(first, now));
        long diff = c.delayS - (now - first);

        if (c.autoWhitelistClients > 0 && diff <= 0 && !passedBefore
                && (awl == null || now >= awl[1] + HOUR)) {
            long count = (awl == null ? 0 : awl[0]) + 1;
            state.put(awlKey, pair(count, now));
        }
        if (diff > 0) {
            String reason = now == first ? (restarted ? "RETRY_WINDOW_EXPIRED" : "NEW") : "TOO_EARLY";
            int at = rcpt.lastIndexOf('@');
            String domain = at >= 0 ? rcpt.substring(at + 1) : rcpt;
            String text = c.greylistText.replace("%s", Long.toString(diff)).replace("%r", domain);
            return new Answer("DEFER", reason, c.greylistAction + " " + text, diff, triplet);
        }
        if (!passedBefore && newInstance(state, a.instance(), now)) {
            long delay = now - first;
            String header = c.xGreylistHeader
                    .replace("%t", Long.toString(delay))
                    .replace("%h", c.hostname)
                    .replace("%v", version)
                    .replace("%d", RFC2822.format(Instant.ofEpochSecond(now)));
            return new Answer("PASS", "PASSED", "PREPEND " + header, delay, triplet);
        }
        return Answer.dunno("PASSED", triplet);
    }

    /** One header per message: an instance already given it gets DUNNO. */
    private static boolean newInstance(State state, String instance, long now) {
        if (instance == null) {
            return true;
        }
        byte[] key = key('i', instance);
        if (state.get(key) != null) {
            return false;
        }
        state.put(key, ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(now).array());
        return true;
    }

    /** Forget what postgrey's nightly clean-up forgets, at the tick's time. */
    int sweep(Rules c, State state, long now) {
        long maxAge = c.maxAgeDays * 86_400;
        List<byte[]> gone = new ArrayList<>();
        state.scan((byte) 't', (k, v) -> {
            long[] seen = pair(v);
            boolean neverPassed = seen[1] - seen[0] < c.delayS;
            if (now - seen[1] > maxAge || (neverPassed && now - seen[1] > c.retryWindowS)) {
                gone.add(k);
            }
        });
        state.scan((byte) 'a', (k, v) -> {
            if (now - pair(v)[1] > maxAge) {
                gone.add(k);
            }
        });
        state.scan((byte) 'i', (k, v) -> {
            long seen = ByteBuffer.wrap(v).order(ByteOrder.LITTLE_ENDIAN).getLong();
            if (now - seen > INSTANCE_TTL) {
                gone.add(k);
            }
        });
        gone.forEach(state::delete);
        return gone.size();
    }
}
