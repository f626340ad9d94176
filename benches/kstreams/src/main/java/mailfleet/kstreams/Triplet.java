package mailfleet.kstreams;

import java.net.InetAddress;
import java.net.UnknownHostException;
import java.util.Locale;

/**
 * The greylist key: client network / normalised sender / recipient,
 * lower-cased, as {@code schemas/src/greylist/triplet.rs} builds it
 * (postgrey 1.37). Addresses are byte arrays: 4 bytes IPv4, 16 bytes IPv6,
 * formatted as Rust's {@code IpAddr} displays them.
 */
final class Triplet {
    private Triplet() {}

    /**
     * A literal IP address as Rust's {@code IpAddr::from_str} accepts it,
     * or null. Never a DNS lookup.
     */
    static byte[] parseIp(String s) {
        if (s.indexOf(':') < 0) {
            return parseIpv4(s);
        }
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (!(c == ':' || c == '.' || Character.digit(c, 16) >= 0)) {
                return null; // no brackets, zone ids or names
            }
        }
        try {
            byte[] b = InetAddress.getByName(s).getAddress();
            if (b.length == 4) { // Java folds ::ffff:a.b.c.d into IPv4; Rust keeps it IPv6
                byte[] v6 = new byte[16];
                v6[10] = (byte) 0xff;
                v6[11] = (byte) 0xff;
                System.arraycopy(b, 0, v6, 12, 4);
                return v6;
            }
            return b;
        } catch (UnknownHostException e) {
            return null;
        }
    }

    private static byte[] parseIpv4(String s) {
        String[] parts = s.split("\\.", -1);
        if (parts.length != 4) {
            return null;
        }
        byte[] out = new byte[4];
        for (int i = 0; i < 4; i++) {
            String p = parts[i];
            if (p.isEmpty() || p.length() > 3 || (p.length() > 1 && p.charAt(0) == '0')) {
                return null;
            }
            int v = 0;
            for (int j = 0; j < p.length(); j++) {
                char c = p.charAt(j);
                if (c < '0' || c > '9') {
                    return null;
                }
                v = v * 10 + (c - '0');
            }
            if (v > 255) {
                return null;
            }
            out[i] = (byte) v;
        }
        return out;
    }

    /** {@code ip} with all bits past {@code prefix} cleared. */
    static byte[] mask(byte[] ip, int prefix) {
        byte[] out = ip.clone();
        int keep = Math.min(prefix, ip.length * 8);
        for (int bit = keep; bit < ip.length * 8; bit++) {
            out[bit / 8] &= (byte) ~(0x80 >>> (bit % 8));
        }
        return out;
    }

    /** An address as Rust displays it (RFC 5952 for IPv6). */
    static String format(byte[] ip) {
        if (ip.length == 4) {
            return (ip[0] & 255) + "." + (ip[1] & 255) + "." + (ip[2] & 255) + "." + (ip[3] & 255);
        }
        int[] g = new int[8];
        for (int i = 0; i < 8; i++) {
            g[i] = ((ip[2 * i] & 255) << 8) | (ip[2 * i + 1] & 255);
        }
        if (g[0] == 0 && g[1] == 0 && g[2] == 0 && g[3] == 0 && g[4] == 0 && g[5] == 0xffff) {
            return "::ffff:" + (g[6] >> 8) + "." + (g[6] & 255) + "." + (g[7] >> 8) + "." + (g[7] & 255);
        }
        int bestStart = -1, bestLen = 0;
        for (int i = 0; i < 8; ) {
            if (g[i] != 0) {
                i++;
                continue;
            }
            int j = i;
            while (j < 8 && g[j] == 0) {
                j++;
            }
            if (j - i > bestLen) {
                bestStart = i;
                bestLen = j - i;
            }
            i = j;
        }
        if (bestLen < 2) {
            bestStart = -1;
        }
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < 8; i++) {
            if (i == bestStart) {
                sb.append("::");
                i += bestLen - 1;
                continue;
            }
            if (sb.length() > 0 && sb.charAt(sb.length() - 1) != ':') {
                sb.append(':');
            }
            sb.append(Integer.toHexString(g[i]));
        }
        return sb.toString();
    }

    /** The client network (or host) an address belongs to, as text. */
    static String clientNet(byte[] ip, Rules r) {
        if (r.lookupByHost) {
            return format(ip);
        }
        return format(mask(ip, ip.length == 4 ? r.ipv4Prefix : r.ipv6Prefix));
    }

    /** Normalise a sender as postgrey does: BATV, +extension, VERP digits. */
    static String normaliseSender(String sender) {
        int at = sender.indexOf('@');
        if (at < 0) {
            return sender;
        }
        String user = stripBatv(sender.substring(0, at));
        int plus = user.indexOf('+');
        if (plus >= 0) {
            user = user.substring(0, plus);
        }
        return hashDigitWords(user) + "@" + sender.substring(at + 1);
    }

    private static boolean looksLikeTag(String s) {
        if (s.length() < 10) {
            return false;
        }
        for (int i = 0; i < 10; i++) {
            char c = s.charAt(i);
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z'))) {
                return false;
            }
        }
        return true;
    }

    private static String stripBatv(String user) {
        String[] parts = user.split("=", -1);
        if (parts.length != 3 || !parts[0].equalsIgnoreCase("prvs")) {
            return user;
        }
        return !looksLikeTag(parts[1]) && looksLikeTag(parts[2]) ? parts[1] : parts[2];
    }

    /** Rust's {@code char::is_alphanumeric} or '_'. */
    private static boolean wordChar(int cp) {
        if (cp == '_' || Character.isAlphabetic(cp)) {
            return true;
        }
        int t = Character.getType(cp);
        return t == Character.DECIMAL_DIGIT_NUMBER || t == Character.LETTER_NUMBER
                || t == Character.OTHER_NUMBER;
    }

    /** Every run of ASCII digits that forms a whole word becomes '#'. */
    static String hashDigitWords(String s) {
        int[] cps = s.codePoints().toArray();
        StringBuilder out = new StringBuilder(s.length());
        int i = 0;
        while (i < cps.length) {
            boolean startsWord = i == 0 || !wordChar(cps[i - 1]);
            if (cps[i] >= '0' && cps[i] <= '9' && startsWord) {
                int end = i;
                while (end < cps.length && cps[end] >= '0' && cps[end] <= '9') {
                    end++;
                }
                if (end == cps.length || !wordChar(cps[end])) {
                    out.append('#');
                    i = end;
                    continue;
                }
            }
            out.appendCodePoint(cps[i]);
            i++;
        }
        return out.toString();
    }

    /** The triplet key, lower-cased. */
    static String of(String clientNet, String sender, String recipient) {
        return (clientNet + "/" + normaliseSender(sender) + "/" + recipient).toLowerCase(Locale.ROOT);
    }
}
