// A small JSON reader and writer. The core reads JSON in one place: a GLB's JSON chunk,
// to cut one level of detail out of a model (GlbLevels.cs); the tests read the shared
// vectors with it too. It is written out because it must behave the same under mono here
// and in every Unity player (IL2CPP strips reflection-based serializers, and Unity's
// JsonUtility cannot read free-form objects): objects become Dictionary<string, object>,
// arrays List<object>, integers long (exact: session times near 1.8e18 ns do not fit a
// double), other numbers double, and true, false, null themselves. Writing gives the
// same kinds back; doubles in the shortest form that reads back the same ("R").
//
// A number is read as the double nearest it (ties to even), as Python's float() and
// JavaScript's JSON.parse read it: mono's double.Parse is an ulp off on about 1 in 6,000
// of Python's shortest forms (17 of 100,000 random doubles in [-2, 2], Mono 6.8), so its
// answer is checked against the exact value, in integers, and moved to the nearest.
using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace Holo.Bridge.Core
{
    public static class Json
    {
        public static object Parse(string text)
        {
            int at = 0;
            object value = Value(text, ref at);
            Space(text, ref at);
            if (at != text.Length) throw Error(text, at, "text after the value");
            return value;
        }

        static Exception Error(string text, int at, string what)
        {
            return new FormatException("JSON: " + what + " at character " + at);
        }

        /// <summary>Compact JSON text of a value made of the kinds Parse returns (any
        /// IDictionary with string keys and IList also do).</summary>
        public static string Write(object value)
        {
            var b = new StringBuilder();
            Write(b, value);
            return b.ToString();
        }

        static void Write(StringBuilder b, object value)
        {
            if (value == null) { b.Append("null"); return; }
            if (value is bool) { b.Append((bool)value ? "true" : "false"); return; }
            if (value is string) { WriteString(b, (string)value); return; }
            if (value is long || value is int || value is uint || value is ulong)
            {
                b.Append(Convert.ToString(value, CultureInfo.InvariantCulture));
                return;
            }
            if (value is double || value is float)
            {
                double d = Convert.ToDouble(value, CultureInfo.InvariantCulture);
                if (double.IsNaN(d) || double.IsInfinity(d)) throw new FormatException("JSON has no " + d);
                b.Append(d.ToString("R", CultureInfo.InvariantCulture));
                return;
            }
            var map = value as IDictionary;
            if (map != null)
            {
                b.Append('{');
                bool first = true;
                foreach (DictionaryEntry kv in map)
                {
                    if (!first) b.Append(',');
                    first = false;
                    WriteString(b, (string)kv.Key);
                    b.Append(':');
                    Write(b, kv.Value);
                }
                b.Append('}');
                return;
            }
            var list = value as IList;
            if (list != null)
            {
                b.Append('[');
                for (int k = 0; k < list.Count; k++)
                {
                    if (k > 0) b.Append(',');
                    Write(b, list[k]);
                }
                b.Append(']');
                return;
            }
            throw new FormatException("JSON cannot hold a " + value.GetType().Name);
        }

        static void WriteString(StringBuilder b, string s)
        {
            b.Append('"');
            foreach (char c in s)
            {
                switch (c)
                {
                    case '"': b.Append("\\\""); break;
                    case '\\': b.Append("\\\\"); break;
                    case '\n': b.Append("\\n"); break;
                    case '\r': b.Append("\\r"); break;
                    case '\t': b.Append("\\t"); break;
                    default:
                        if (c < 0x20) b.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                        else b.Append(c);
                        break;
                }
            }
            b.Append('"');
        }

        static void Space(string s, ref int at)
        {
            while (at < s.Length && (s[at] == ' ' || s[at] == '\n' || s[at] == '\r' || s[at] == '\t')) at++;
        }

        static object Value(string s, ref int at)
        {
            Space(s, ref at);
            if (at >= s.Length) throw Error(s, at, "a value expected");
            char c = s[at];
            if (c == '{') return Object(s, ref at);
            if (c == '[') return Array(s, ref at);
            if (c == '"') return String(s, ref at);
            if (Word(s, ref at, "true")) return true;
            if (Word(s, ref at, "false")) return false;
            if (Word(s, ref at, "null")) return null;
            if (c == '-' || (c >= '0' && c <= '9')) return Number(s, ref at);
            if (Word(s, ref at, "NaN")) return double.NaN;
            if (Word(s, ref at, "Infinity")) return double.PositiveInfinity;
            throw Error(s, at, "unexpected '" + c + "'");
        }

        static bool Word(string s, ref int at, string word)
        {
            if (string.CompareOrdinal(s, at, word, 0, word.Length) != 0) return false;
            at += word.Length;
            return true;
        }

        static Dictionary<string, object> Object(string s, ref int at)
        {
            var result = new Dictionary<string, object>();
            at++; // {
            Space(s, ref at);
            if (s[at] == '}') { at++; return result; }
            while (true)
            {
                Space(s, ref at);
                string key = String(s, ref at);
                Space(s, ref at);
                if (s[at] != ':') throw Error(s, at, "':' expected");
                at++;
                result[key] = Value(s, ref at);
                Space(s, ref at);
                if (s[at] == ',') { at++; continue; }
                if (s[at] == '}') { at++; return result; }
                throw Error(s, at, "',' or '}' expected");
            }
        }

        static List<object> Array(string s, ref int at)
        {
            var result = new List<object>();
            at++; // [
            Space(s, ref at);
            if (s[at] == ']') { at++; return result; }
            while (true)
            {
                result.Add(Value(s, ref at));
                Space(s, ref at);
                if (s[at] == ',') { at++; continue; }
                if (s[at] == ']') { at++; return result; }
                throw Error(s, at, "',' or ']' expected");
            }
        }

        static string String(string s, ref int at)
        {
            if (s[at] != '"') throw Error(s, at, "a string expected");
            at++;
            var b = new StringBuilder();
            while (s[at] != '"')
            {
                char c = s[at++];
                if (c != '\\') { b.Append(c); continue; }
                char e = s[at++];
                switch (e)
                {
                    case '"': b.Append('"'); break;
                    case '\\': b.Append('\\'); break;
                    case '/': b.Append('/'); break;
                    case 'b': b.Append('\b'); break;
                    case 'f': b.Append('\f'); break;
                    case 'n': b.Append('\n'); break;
                    case 'r': b.Append('\r'); break;
                    case 't': b.Append('\t'); break;
                    case 'u':
                        b.Append((char)int.Parse(s.Substring(at, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                        at += 4;
                        break;
                    default: throw Error(s, at, "bad escape");
                }
            }
            at++;
            return b.ToString();
        }

        static object Number(string s, ref int at)
        {
            int start = at;
            bool integer = true;
            if (s[at] == '-') at++;
            while (at < s.Length)
            {
                char c = s[at];
                if (c >= '0' && c <= '9') { at++; continue; }
                if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') { integer = false; at++; continue; }
                break;
            }
            string text = s.Substring(start, at - start);
            long whole;
            if (integer && long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out whole)) return whole;
            if (text == "-Infinity") return double.NegativeInfinity;
            return Nearest(text, double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture));
        }

        /// <summary>The double nearest the decimal <paramref name="text"/> (ties to even),
        /// from <paramref name="guess"/>, a double at most an ulp or two away.</summary>
        internal static double Nearest(string text, double guess)
        {
            double a = Math.Abs(guess);
            if (a == 0 || double.IsInfinity(a) || double.IsNaN(a)) return guess;
            // text = digits x 10^exponent, digits an integer.
            var digits = new Natural();
            int exponent = 0, at = text[0] == '-' || text[0] == '+' ? 1 : 0;
            bool fraction = false;
            for (; at < text.Length; at++)
            {
                char c = text[at];
                if (c == '.') { fraction = true; continue; }
                if (c == 'e' || c == 'E')
                {
                    exponent += int.Parse(text.Substring(at + 1), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
                    break;
                }
                digits.MultiplyAdd(10, (uint)(c - '0'));
                if (fraction) exponent--;
            }
            for (int step = 0; step < 4; step++)
            {
                long bits = BitConverter.DoubleToInt64Bits(a);
                bool odd = (bits & 1) != 0;
                int up = bits + 1 < 0x7FF0000000000000L ? Compare(digits, exponent, bits, bits + 1) : -1;
                if (up > 0 || (up == 0 && odd))
                {
                    a = BitConverter.Int64BitsToDouble(bits + 1);
                    continue;
                }
                int down = Compare(digits, exponent, bits - 1, bits);
                if (down < 0 || (down == 0 && odd))
                {
                    a = BitConverter.Int64BitsToDouble(bits - 1);
                    continue;
                }
                break;
            }
            return guess < 0 ? -a : a;
        }

        /// <summary>digits x 10^exponent against the point half way between the positive
        /// doubles of bits <paramref name="low"/> and <paramref name="low"/> + 1.</summary>
        static int Compare(Natural digits, int exponent, long low, long high)
        {
            // Each double is m x 2^k (m below 2^53); their sum is an integer times 2^min(k).
            long mLow, mHigh;
            int kLow = Decompose(low, out mLow), kHigh = Decompose(high, out mHigh);
            int k = Math.Min(kLow, kHigh);
            ulong sum = ((ulong)mLow << (kLow - k)) + ((ulong)mHigh << (kHigh - k));
            var left = digits.Copy();
            var right = new Natural();
            right.Set(sum);
            for (int e = 0; e < Math.Abs(exponent); e++) (exponent > 0 ? left : right).MultiplyAdd(10, 0);
            int twos = k - 1; // the half
            if (twos > 0) right.ShiftLeft(twos); else left.ShiftLeft(-twos);
            return left.CompareTo(right);
        }

        static int Decompose(long bits, out long mantissa)
        {
            int e = (int)(bits >> 52);
            mantissa = bits & 0xFFFFFFFFFFFFFL;
            if (e == 0) return -1074;
            mantissa |= 1L << 52;
            return e - 1075;
        }

        /// <summary>A non-negative integer of any size, in 32-bit words, least first: what
        /// Nearest needs of one, and no more.</summary>
        sealed class Natural
        {
            List<uint> words = new List<uint>();

            public Natural Copy() { return new Natural { words = new List<uint>(words) }; }

            public void Set(ulong value)
            {
                words.Clear();
                words.Add((uint)value);
                words.Add((uint)(value >> 32));
                Trim();
            }

            public void MultiplyAdd(uint factor, uint add)
            {
                ulong carry = add;
                for (int i = 0; i < words.Count; i++)
                {
                    carry += (ulong)words[i] * factor;
                    words[i] = (uint)carry;
                    carry >>= 32;
                }
                if (carry != 0) words.Add((uint)carry);
            }

            public void ShiftLeft(int n)
            {
                if (words.Count == 0) return;
                int whole = n / 32, part = n % 32;
                if (part > 0)
                {
                    uint carry = 0;
                    for (int i = 0; i < words.Count; i++)
                    {
                        uint w = words[i];
                        words[i] = (w << part) | carry;
                        carry = w >> (32 - part);
                    }
                    if (carry != 0) words.Add(carry);
                }
                words.InsertRange(0, new uint[whole]);
            }

            void Trim()
            {
                while (words.Count > 0 && words[words.Count - 1] == 0) words.RemoveAt(words.Count - 1);
            }

            public int CompareTo(Natural other)
            {
                Trim();
                other.Trim();
                if (words.Count != other.words.Count) return words.Count.CompareTo(other.words.Count);
                for (int i = words.Count - 1; i >= 0; i--)
                {
                    if (words[i] != other.words[i]) return words[i].CompareTo(other.words[i]);
                }
                return 0;
            }
        }
    }
}
