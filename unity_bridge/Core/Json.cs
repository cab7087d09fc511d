// A small JSON reader and writer. The core reads JSON in one place: a GLB's JSON chunk,
// to cut one level of detail out of a model (GlbLevels.cs); the tests read the shared
// vectors with it too. It is written out because it must behave the same under mono here
// and in every Unity player (IL2CPP strips reflection-based serializers, and Unity's
// JsonUtility cannot read free-form objects): objects become Dictionary<string, object>,
// arrays List<object>, integers long (exact: session times near 1.8e18 ns do not fit a
// double), other numbers double, and true, false, null themselves. Writing gives the
// same kinds back; doubles in the shortest form that reads back the same ("R").
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
            return double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture);
        }
    }
}
