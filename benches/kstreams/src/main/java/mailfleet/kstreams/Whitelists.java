package mailfleet.kstreams;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * Client and recipient whitelists in postgrey's file format, as
 * {@code services/greylist/src/whitelist.rs} reads them (see its module
 * doc for the syntax). Only what a decision needs: no file watching, the
 * texts come from the recorded settings or are read once at start.
 */
final class Whitelists {
    private final Set<String> clientNames = new HashSet<>();
    private final List<Pattern> clientRegexes = new ArrayList<>();
    private final List<byte[]> clientNets = new ArrayList<>(); // network bytes
    private final List<Integer> clientBits = new ArrayList<>();
    private final Set<String> recipientUsersAt = new HashSet<>();
    private final Set<String> recipientAddresses = new HashSet<>();
    private final Set<String> recipientDomains = new HashSet<>();
    private final List<Pattern> recipientRegexes = new ArrayList<>();

    private static Pattern regex(String path, int line, String text) {
        try {
            return Pattern.compile(text, Pattern.CASE_INSENSITIVE | Pattern.UNICODE_CASE);
        } catch (PatternSyntaxException e) {
            throw new IllegalArgumentException(path + " line " + line + ": " + e.getDescription() + ": " + text);
        }
    }

    private interface Entry { void take(int line, String entry); }

    private static void entries(String text, Entry f) {
        String[] lines = text.split("\n", -1);
        for (int i = 0; i < lines.length; i++) {
            String l = lines[i];
            if (l.endsWith("\r")) {
                l = l.substring(0, l.length() - 1);
            }
            int hash = l.indexOf('#');
            l = (hash >= 0 ? l.substring(0, hash) : l).strip();
            if (!l.isEmpty()) {
                f.take(i + 1, l);
            }
        }
    }

    /** (network, bits) of an address or network entry, or null. */
    private static Object[] parseNet(String s) {
        String addr = s;
        Integer bits = null;
        int slash = s.indexOf('/');
        if (slash >= 0) {
            addr = s.substring(0, slash);
            try {
                int b = Integer.parseInt(s.substring(slash + 1));
                if (b < 0 || b > 255) {
                    return null;
                }
                bits = b;
            } catch (NumberFormatException e) {
                return null;
            }
        }
        byte[] ip = Triplet.parseIp(addr);
        if (ip != null) {
            int max = ip.length * 8;
            int b = bits == null ? max : bits;
            return b <= max ? new Object[] {Triplet.mask(ip, b), b} : null;
        }
        // Partial IPv4: `a.b.c` is a /24, `a.b` a /16.
        String[] octets = addr.split("\\.", -1);
        if (bits != null || octets.length < 2 || octets.length > 3) {
            return null;
        }
        byte[] full = new byte[4];
        for (int i = 0; i < octets.length; i++) {
            try {
                int v = Integer.parseInt(octets[i]);
                if (v < 0 || v > 255) {
                    return null;
                }
                full[i] = (byte) v;
            } catch (NumberFormatException e) {
                return null;
            }
        }
        return new Object[] {full, 8 * octets.length};
    }

    private static boolean domainMatch(Set<String> set, String name) {
        String rest = name;
        while (true) {
            if (set.contains(rest)) {
                return true;
            }
            int dot = rest.indexOf('.');
            if (dot < 0) {
                return false;
            }
            rest = rest.substring(dot + 1);
        }
    }

    private static boolean hasWhitespace(String s) {
        return s.codePoints().anyMatch(Character::isWhitespace);
    }

    private static String asciiLower(String s) {
        StringBuilder b = new StringBuilder(s.length());
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            b.append(c >= 'A' && c <= 'Z' ? (char) (c + 32) : c);
        }
        return b.toString();
    }

    void addClients(String path, String text) {
        entries(text, (line, entry) -> {
            Object[] net;
            if (entry.length() >= 2 && entry.startsWith("/") && entry.endsWith("/")) {
                clientRegexes.add(regex(path, line, entry.substring(1, entry.length() - 1)));
            } else if ((net = parseNet(entry)) != null) {
                clientNets.add((byte[]) net[0]);
                clientBits.add((Integer) net[1]);
            } else if (entry.contains(":") || entry.contains("/") || hasWhitespace(entry)) {
                throw new IllegalArgumentException(path + " line " + line
                        + ": not an address, network or host name: " + entry);
            } else {
                clientNames.add(asciiLower(entry));
            }
        });
    }

    void addRecipients(String path, String text) {
        entries(text, (line, entry) -> {
            String lower = asciiLower(entry);
            if (entry.length() >= 2 && entry.startsWith("/") && entry.endsWith("/")) {
                recipientRegexes.add(regex(path, line, entry.substring(1, entry.length() - 1)));
            } else if (hasWhitespace(entry)) {
                throw new IllegalArgumentException(path + " line " + line + ": not an address: " + entry);
            } else if (lower.endsWith("@")) {
                recipientUsersAt.add(lower.substring(0, lower.length() - 1));
            } else if (lower.contains("@")) {
                recipientAddresses.add(lower);
            } else {
                recipientDomains.add(lower);
            }
        });
    }

    /** Whether the client (by name or address) is whitelisted. */
    boolean client(byte[] ip, String name) {
        String lower = asciiLower(name);
        if (domainMatch(clientNames, lower)) {
            return true;
        }
        for (Pattern p : clientRegexes) {
            if (p.matcher(lower).find()) {
                return true;
            }
        }
        if (ip != null) {
            for (int i = 0; i < clientNets.size(); i++) {
                byte[] net = clientNets.get(i);
                if (net.length == ip.length
                        && java.util.Arrays.equals(Triplet.mask(ip, clientBits.get(i)), net)) {
                    return true;
                }
            }
        }
        return false;
    }

    /** Whether the recipient is whitelisted. */
    boolean recipient(String recipient) {
        String lower = asciiLower(recipient);
        for (Pattern p : recipientRegexes) {
            if (p.matcher(lower).find()) {
                return true;
            }
        }
        int at = lower.lastIndexOf('@');
        if (at < 0) {
            return domainMatch(recipientDomains, lower);
        }
        String user = lower.substring(0, at);
        String domain = lower.substring(at + 1);
        int plus = user.indexOf('+');
        String baseUser = plus >= 0 ? user.substring(0, plus) : user;
        return recipientUsersAt.contains(baseUser)
                || recipientAddresses.contains(baseUser + "@" + domain)
                || domainMatch(recipientDomains, domain);
    }
}
