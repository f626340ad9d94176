package mailfleet.kstreams;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * The settings a greylist decision is made with: {@code GreylistRules} of
 * {@code services/greylist/src/config.rs}, with postgrey's defaults, and
 * the whitelists they carry when recorded in a {@code ConfigChanged}.
 */
final class Rules {
    long delayS = 300;
    long maxAgeDays = 35;
    long retryWindowS = 2 * 86_400;
    long autoWhitelistClients = 5;
    int ipv4Prefix = 24;
    int ipv6Prefix = 64;
    boolean lookupByHost = false;
    String greylistAction = "DEFER_IF_PERMIT";
    String greylistText = "Greylisted, try again in %s seconds";
    String xGreylistHeader = "X-Greylist: delayed %t seconds by mailfleet at %h; %d";
    String hostname = "localhost";
    /** Recorded whitelists; null: the files given at start. */
    Whitelists lists;

    private static final ObjectMapper JSON = new ObjectMapper();

    /** The SHA-256 of recorded settings JSON, hex (their hash in ConfigChanged). */
    static String hash(String json) {
        try {
            byte[] d = MessageDigest.getInstance("SHA-256").digest(json.getBytes(StandardCharsets.UTF_8));
            return HexFormat.of().formatHex(d);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    private static JsonNode need(JsonNode root, String key) {
        JsonNode n = root.get(key);
        if (n == null || n.isNull()) {
            throw new IllegalArgumentException("missing field " + key);
        }
        return n;
    }

    /** Rules from recorded settings JSON; an error says what is wrong. */
    static Rules fromJson(String json) throws Exception {
        JsonNode root = JSON.readTree(json);
        Rules r = new Rules();
        r.delayS = need(root, "delay_s").asLong();
        r.maxAgeDays = need(root, "max_age_days").asLong();
        r.retryWindowS = need(root, "retry_window_s").asLong();
        r.autoWhitelistClients = need(root, "auto_whitelist_clients").asLong();
        r.ipv4Prefix = need(root, "ipv4_prefix").asInt();
        r.ipv6Prefix = need(root, "ipv6_prefix").asInt();
        r.lookupByHost = need(root, "lookup_by_host").asBoolean();
        r.greylistAction = need(root, "greylist_action").asText();
        r.greylistText = need(root, "greylist_text").asText();
        r.xGreylistHeader = need(root, "x_greylist_header").asText();
        r.hostname = need(root, "hostname").asText();
        JsonNode lists = root.get("whitelists");
        if (lists != null && !lists.isNull()) {
            Whitelists w = new Whitelists();
            for (JsonNode t : need(lists, "clients")) {
                w.addClients(need(t, "name").asText(), need(t, "text").asText());
            }
            for (JsonNode t : need(lists, "recipients")) {
                w.addRecipients(need(t, "name").asText(), need(t, "text").asText());
            }
            r.lists = w;
        }
        List<String> problems = r.problems();
        if (!problems.isEmpty()) {
            throw new IllegalArgumentException(String.join("; ", problems));
        }
        return r;
    }

    /** Every problem, as {@code GreylistConfig::problems} names them. */
    List<String> problems() {
        List<String> out = new ArrayList<>();
        String k = "consumers.greylist";
        if (delayS < 0) {
            out.add(k + ".delay_s = " + delayS + ": must be >= 0");
        }
        if (maxAgeDays < 1) {
            out.add(k + ".max_age_days = " + maxAgeDays + ": must be >= 1");
        }
        if (retryWindowS < delayS) {
            out.add(k + ".retry_window_s = " + retryWindowS + ": must be >= delay_s (" + delayS + ")");
        }
        if (ipv4Prefix < 0 || ipv4Prefix > 32) {
            out.add(k + ".ipv4_prefix = " + ipv4Prefix + ": must be 0..=32");
        }
        if (ipv6Prefix < 0 || ipv6Prefix > 128) {
            out.add(k + ".ipv6_prefix = " + ipv6Prefix + ": must be 0..=128");
        }
        if (greylistAction.strip().isEmpty()) {
            out.add(k + ".greylist_action is empty");
        }
        return out;
    }
}
