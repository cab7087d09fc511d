// A string-keyed map that keeps insertion order, as Python's dict does: the session state
// lists participants, models and annotations in the order they appeared, and the fold
// depends on it (control falls back to the first present presenter). .NET's Dictionary
// does not promise an order (after a removal it reuses the slot), so it is not enough.
//
// Setting an existing key keeps its place; removing one and adding it again puts it last:
// the same as `d[k] = v` and `d.pop(k)` in Python. Removal is linear: a session's
// collections are bounded by holo/session/limits.py (hundreds), so that is cheap.
using System.Collections;
using System.Collections.Generic;

namespace Holo.Bridge.Core
{
    public sealed class OrderedMap<TValue> : IEnumerable<KeyValuePair<string, TValue>>
    {
        readonly Dictionary<string, TValue> values;
        readonly List<string> keys;

        public OrderedMap()
        {
            values = new Dictionary<string, TValue>();
            keys = new List<string>();
        }

        OrderedMap(OrderedMap<TValue> other)
        {
            values = new Dictionary<string, TValue>(other.values);
            keys = new List<string>(other.keys);
        }

        public int Count { get { return keys.Count; } }

        /// <summary>The keys in insertion order.</summary>
        public IList<string> Keys { get { return keys.AsReadOnly(); } }

        /// <summary>The values in insertion order.</summary>
        public IEnumerable<TValue> Values
        {
            get
            {
                foreach (string key in keys) yield return values[key];
            }
        }

        public bool ContainsKey(string key) { return values.ContainsKey(key); }

        public bool TryGetValue(string key, out TValue value) { return values.TryGetValue(key, out value); }

        /// <summary>The value of <paramref name="key"/>, or the default (null) when absent.</summary>
        public TValue Get(string key)
        {
            TValue value;
            return values.TryGetValue(key, out value) ? value : default(TValue);
        }

        public void Set(string key, TValue value)
        {
            if (!values.ContainsKey(key)) keys.Add(key);
            values[key] = value;
        }

        public bool Remove(string key)
        {
            if (!values.Remove(key)) return false;
            keys.Remove(key);
            return true;
        }

        public void Clear()
        {
            values.Clear();
            keys.Clear();
        }

        public OrderedMap<TValue> Copy() { return new OrderedMap<TValue>(this); }

        public IEnumerator<KeyValuePair<string, TValue>> GetEnumerator()
        {
            foreach (string key in keys) yield return new KeyValuePair<string, TValue>(key, values[key]);
        }

        IEnumerator IEnumerable.GetEnumerator() { return GetEnumerator(); }
    }
}
